use super::*;
use bytes::Bytes;
use tokio::sync::oneshot;

fn id(n: u8) -> DeliveryId {
    DeliveryId::parse(&format!("id{n}")).unwrap()
}

#[test]
fn chunked_answers_are_assembled_and_bounded() {
    let pending = Pending::open();
    let mut partial = crate::session::Partials::new(10, 4);
    let (tx, mut rx) = oneshot::channel();
    pending.insert(id(1), tx).unwrap();
    let head = ClientMessage::Response {
        id: id(1),
        status: 201,
        headers: vec![("x-a".into(), vec![0xff])],
        body: Bytes::from_static(b"ab"),
        end: false,
    };
    on_message(head, &pending, &mut partial);
    assert!(rx.try_recv().is_err());
    let chunk = |data: &'static [u8], end| ClientMessage::ResponseChunk {
        id: id(1),
        data: Bytes::from_static(data),
        end,
    };
    on_message(chunk(b"cd", false), &pending, &mut partial);
    on_message(chunk(b"ef", true), &pending, &mut partial);
    match rx.try_recv().unwrap() {
        Reply::Answered {
            status,
            headers,
            body,
        } => {
            assert_eq!(
                (status, headers[0].1.as_slice(), body.as_ref()),
                (201, &[0xff][..], &b"abcdef"[..])
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(partial.is_empty());

    let (tx, mut rx) = oneshot::channel();
    pending.insert(id(2), tx).unwrap();
    let head = ClientMessage::Response {
        id: id(2),
        status: 200,
        headers: vec![],
        body: Bytes::from_static(b"12345678"),
        end: false,
    };
    on_message(head, &pending, &mut partial);
    on_message(
        ClientMessage::ResponseChunk {
            id: id(2),
            data: Bytes::from_static(b"9ab"),
            end: true,
        },
        &pending,
        &mut partial,
    );
    assert!(
        matches!(rx.try_recv().unwrap(), Reply::Failed(m) if m.contains("larger than the relay's limit of 10 bytes"))
    );
    assert!(partial.is_empty());
}
