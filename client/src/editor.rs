//! The one way both `$EDITOR` round trips (`replay --edit` and the inspector's `e`) start the
//! editor: `$VISUAL`, else `$EDITOR`, else `vi`, split into words as a shell would split it
//! (`code --wait`, `"/opt/My Editor/ed"`) and run directly, with the file as the last argument.
//! No shell runs in between, so nothing in the value is expanded or executed besides the editor.

use std::path::Path;
use std::process::Command;

/// Used when neither `$VISUAL` nor `$EDITOR` is set.
const FALLBACK: &str = "vi";

/// The editor setting: the first non-blank of `$VISUAL`, `$EDITOR`, else `vi`.
pub fn configured() -> String {
    pick(std::env::var("VISUAL").ok(), std::env::var("EDITOR").ok())
}

fn pick(visual: Option<String>, editor: Option<String>) -> String {
    [visual, editor]
        .into_iter()
        .flatten()
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| FALLBACK.to_string())
}

/// The command that opens `path` in `editor`; a sentence when `editor` cannot be split.
pub fn command(editor: &str, path: &Path) -> Result<Command, String> {
    let words = shlex::split(editor)
        .filter(|w| !w.is_empty())
        .ok_or_else(|| {
            format!("could not read the editor setting {editor:?}; set VISUAL or EDITOR to a command such as \"code --wait\"")
        })?;
    let (program, args) = words
        .split_first()
        .ok_or_else(|| "the editor setting is empty; set VISUAL or EDITOR".to_string())?;
    let mut command = Command::new(program);
    command.args(args).arg(path);
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visual_wins_and_blank_values_fall_through() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(pick(s("code --wait"), s("nano")), "code --wait");
        assert_eq!(pick(s("  "), s("nano")), "nano");
        assert_eq!(pick(None, None), "vi");
    }

    #[test]
    fn words_are_split_like_a_shell_and_the_path_comes_last() {
        let cmd = command(
            r#""/opt/My Editor/ed" --wait -c 'set ft=json'"#,
            Path::new("/tmp/b.json"),
        )
        .unwrap();
        assert_eq!(cmd.get_program(), "/opt/My Editor/ed");
        let args: Vec<_> = cmd.get_args().collect();
        assert_eq!(args, ["--wait", "-c", "set ft=json", "/tmp/b.json"]);
        assert!(command("vim 'unclosed", Path::new("x"))
            .unwrap_err()
            .contains("set VISUAL or EDITOR"));
    }

    #[cfg(unix)]
    #[test]
    fn no_shell_runs_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        // Through `sh -c` this would create the marker; run directly, `echo` prints it all.
        let editor = format!("echo ; touch {}", marker.display());
        let out = command(&editor, &dir.path().join("f"))
            .unwrap()
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(!marker.exists());
    }
}
