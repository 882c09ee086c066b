//! Building the web inspector's responses: JSON, `{"error": …}` with its status, static text,
//! raw bytes and streams, each with the same security headers and never a CORS header.

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};

/// A response body: whole, or a stream.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The page may load only its own script, styles and connections; nothing inline, no frames.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// A response before the security headers go on.
pub struct Reply {
    status: StatusCode,
    content_type: HeaderValue,
    body: Body,
    attachment: bool,
}

impl Reply {
    /// `value` as JSON with `status`.
    pub fn json(status: StatusCode, value: &serde_json::Value) -> Reply {
        // `escape::json_string` writes control characters as `\uXXXX`, as every `--json` does.
        let text = illumitunnel::escape::json_string(value);
        Reply::bytes(
            status,
            Bytes::from(text),
            HeaderValue::from_static("application/json"),
        )
    }

    /// Static text with its content type.
    pub fn text(text: &str, content_type: &'static str) -> Reply {
        Reply::bytes(
            StatusCode::OK,
            Bytes::copy_from_slice(text.as_bytes()),
            HeaderValue::from_static(content_type),
        )
    }

    /// Raw bytes.
    pub fn bytes(status: StatusCode, body: Bytes, content_type: HeaderValue) -> Reply {
        Reply {
            status,
            content_type,
            body: Full::new(body).boxed_unsync(),
            attachment: false,
        }
    }

    /// A streamed body (server-sent events).
    pub fn stream(body: Body, content_type: &'static str) -> Reply {
        Reply {
            status: StatusCode::OK,
            content_type: HeaderValue::from_static(content_type),
            body,
            attachment: false,
        }
    }

    /// Marks recorded bytes as a download: a browser never renders them as a page of this
    /// origin, whatever content type the sender gave them.
    pub fn attachment(mut self) -> Reply {
        self.attachment = true;
        self
    }

    /// The response with the security headers every answer carries.
    pub fn into_response(self) -> Response<Body> {
        let mut response = Response::new(self.body);
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, self.content_type);
        headers.insert("content-security-policy", HeaderValue::from_static(CSP));
        headers.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.attachment {
            headers.insert(CONTENT_DISPOSITION, HeaderValue::from_static("attachment"));
        }
        response
    }
}

/// `{"error": sentence}` with `status`.
pub fn error(status: StatusCode, sentence: &str) -> Reply {
    Reply::json(status, &serde_json::json!({ "error": sentence }))
}
