//! The key table: what each key means, as pure functions from a crossterm `KeyEvent` to an
//! action, one table per input mode. In raw mode Ctrl-C arrives as a key, so every table maps it
//! to quitting.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What a key asks for while the list (and maybe the details) has the keyboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Select the delivery above.
    Up,
    /// Select the delivery below.
    Down,
    /// One screen up.
    PageUp,
    /// One screen down.
    PageDown,
    /// The oldest delivery.
    First,
    /// The newest delivery (and follow again).
    Last,
    /// Open or close the details.
    ToggleDetails,
    /// Next details tab (opens the details).
    NextTab,
    /// Previous details tab.
    PrevTab,
    /// A details tab by number, 0-based.
    Tab(usize),
    /// Scroll the details down.
    DetailsDown,
    /// Scroll the details up.
    DetailsUp,
    /// Replay the selected delivery.
    Replay,
    /// Replay the selected delivery as a test: compare the answer with the recorded one.
    Test,
    /// Leave the first changed field of the shown test out of every test this session.
    Ignore,
    /// Edit the selected body in `$VISUAL`/`$EDITOR`, then replay it.
    Edit,
    /// Copy the selected delivery as a curl command.
    Copy,
    /// Open the filter prompt.
    Filter,
    /// Pause or resume following the newest delivery.
    TogglePause,
    /// Show or hide the key help.
    Help,
    /// Close the topmost thing (help, details, filter).
    Back,
    /// Leave the inspector.
    Quit,
}

/// What a key does while the filter prompt is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptAction {
    /// Type a character.
    Insert(char),
    /// Delete the last character.
    Backspace,
    /// Empty the prompt.
    Clear,
    /// Apply the filter.
    Submit,
    /// Clear the filter and close the prompt.
    Cancel,
    /// Leave the inspector.
    Quit,
}

/// What a key does while a yes/no question is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmAction {
    /// Yes.
    Yes,
    /// No.
    No,
    /// Leave the inspector.
    Quit,
}

fn is_ctrl_c(key: &KeyEvent) -> bool {
    key.modifiers.contains(KeyModifiers::CONTROL)
        && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('C'))
}

/// The list's key table.
pub fn action(key: KeyEvent) -> Option<Action> {
    if is_ctrl_c(&key) {
        return Some(Action::Quit);
    }
    let shift = key.modifiers.contains(KeyModifiers::SHIFT);
    let action = match key.code {
        KeyCode::Up if shift => Action::DetailsUp,
        KeyCode::Down if shift => Action::DetailsDown,
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::Char('K') => Action::DetailsUp,
        KeyCode::Char('J') => Action::DetailsDown,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::Home | KeyCode::Char('g') => Action::First,
        KeyCode::End | KeyCode::Char('G') => Action::Last,
        KeyCode::Enter => Action::ToggleDetails,
        KeyCode::Tab => Action::NextTab,
        KeyCode::BackTab => Action::PrevTab,
        KeyCode::Char(c @ '1'..='4') => Action::Tab(c as usize - '1' as usize),
        KeyCode::Char('r') => Action::Replay,
        KeyCode::Char('t') => Action::Test,
        KeyCode::Char('i') => Action::Ignore,
        KeyCode::Char('e') => Action::Edit,
        KeyCode::Char('c') => Action::Copy,
        KeyCode::Char('/') => Action::Filter,
        KeyCode::Char('p') => Action::TogglePause,
        KeyCode::Char('?') => Action::Help,
        KeyCode::Esc => Action::Back,
        KeyCode::Char('q') => Action::Quit,
        _ => return None,
    };
    if key
        .modifiers
        .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT)
    {
        return None;
    }
    Some(action)
}

/// The filter prompt's key table.
pub fn prompt(key: KeyEvent) -> Option<PromptAction> {
    if is_ctrl_c(&key) {
        return Some(PromptAction::Quit);
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    Some(match key.code {
        KeyCode::Char('u') if ctrl => PromptAction::Clear,
        KeyCode::Char(c) if !ctrl && !key.modifiers.contains(KeyModifiers::ALT) => {
            PromptAction::Insert(c)
        }
        KeyCode::Backspace => PromptAction::Backspace,
        KeyCode::Enter => PromptAction::Submit,
        KeyCode::Esc => PromptAction::Cancel,
        _ => return None,
    })
}

/// The yes/no question's key table.
pub fn confirm(key: KeyEvent) -> Option<ConfirmAction> {
    if is_ctrl_c(&key) {
        return Some(ConfirmAction::Quit);
    }
    match key.code {
        KeyCode::Char('y' | 'Y') => Some(ConfirmAction::Yes),
        KeyCode::Char('n' | 'N') | KeyCode::Esc => Some(ConfirmAction::No),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn ctrl(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }

    #[test]
    fn list_table() {
        let table = [
            (key(KeyCode::Up), Some(Action::Up)),
            (key(KeyCode::Char('k')), Some(Action::Up)),
            (key(KeyCode::Down), Some(Action::Down)),
            (key(KeyCode::Char('j')), Some(Action::Down)),
            (key(KeyCode::PageUp), Some(Action::PageUp)),
            (key(KeyCode::PageDown), Some(Action::PageDown)),
            (key(KeyCode::Char('g')), Some(Action::First)),
            (
                KeyEvent::new(KeyCode::Char('G'), KeyModifiers::SHIFT),
                Some(Action::Last),
            ),
            (key(KeyCode::Enter), Some(Action::ToggleDetails)),
            (key(KeyCode::Tab), Some(Action::NextTab)),
            (
                KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT),
                Some(Action::PrevTab),
            ),
            (key(KeyCode::Char('3')), Some(Action::Tab(2))),
            (
                KeyEvent::new(KeyCode::Down, KeyModifiers::SHIFT),
                Some(Action::DetailsDown),
            ),
            (key(KeyCode::Char('r')), Some(Action::Replay)),
            (key(KeyCode::Char('t')), Some(Action::Test)),
            (key(KeyCode::Char('i')), Some(Action::Ignore)),
            (key(KeyCode::Char('e')), Some(Action::Edit)),
            (key(KeyCode::Char('c')), Some(Action::Copy)),
            (key(KeyCode::Char('/')), Some(Action::Filter)),
            (key(KeyCode::Char('p')), Some(Action::TogglePause)),
            (key(KeyCode::Char('?')), Some(Action::Help)),
            (key(KeyCode::Esc), Some(Action::Back)),
            (key(KeyCode::Char('q')), Some(Action::Quit)),
            (ctrl('c'), Some(Action::Quit)),
            (ctrl('r'), None),
            (key(KeyCode::Char('x')), None),
            (key(KeyCode::F(1)), None),
        ];
        for (k, want) in table {
            assert_eq!(action(k), want, "{k:?}");
        }
    }

    #[test]
    fn prompt_and_confirm_tables() {
        assert_eq!(
            prompt(key(KeyCode::Char('q'))),
            Some(PromptAction::Insert('q'))
        );
        assert_eq!(prompt(key(KeyCode::Esc)), Some(PromptAction::Cancel));
        assert_eq!(prompt(key(KeyCode::Enter)), Some(PromptAction::Submit));
        assert_eq!(
            prompt(key(KeyCode::Backspace)),
            Some(PromptAction::Backspace)
        );
        assert_eq!(prompt(ctrl('u')), Some(PromptAction::Clear));
        assert_eq!(prompt(ctrl('c')), Some(PromptAction::Quit));
        assert_eq!(confirm(key(KeyCode::Char('y'))), Some(ConfirmAction::Yes));
        assert_eq!(confirm(key(KeyCode::Esc)), Some(ConfirmAction::No));
        assert_eq!(confirm(ctrl('c')), Some(ConfirmAction::Quit));
        assert_eq!(confirm(key(KeyCode::Char('q'))), None);
    }
}
