//! Bounding text taken from input before it is echoed back: names, lists of names and messages.
//!
//! Anything a user wrote can be huge (a 200 KB task name, a 100,000-task cycle) or hostile
//! (terminal escape sequences, NUL). Every message ork builds from input goes through these
//! helpers, so one bad manifest cannot produce a 256 MB error report, a condition etcd refuses
//! or a terminal that prints an attacker's escape codes.

use std::fmt::Write as _;

/// Longest condition message and Event note ork writes, in bytes (as `metav1.Condition`).
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;

/// Characters of a name shown before it is elided.
pub const MAX_NAME_CHARS: usize = 64;

/// Items of a list shown before the rest are counted instead.
pub const MAX_LIST_ITEMS: usize = 20;

/// `name` quoted, with control characters escaped, elided past [`MAX_NAME_CHARS`] characters:
/// `"extract"`, `"aaaa…" (200000 characters)`.
pub fn quoted(name: &str) -> String {
    let mut chars = name.chars();
    let head: String = chars.by_ref().take(MAX_NAME_CHARS).collect();
    if chars.next().is_none() {
        return format!("{head:?}");
    }
    let total = name.chars().count();
    let mut out = format!("{head:?}");
    // Put the ellipsis inside the quotes: `"aaaa…"`.
    out.insert(out.len() - 1, '…');
    let _ = write!(out, " ({total} characters)");
    out
}

/// Items joined with `, `, each passed through `show`, at most [`MAX_LIST_ITEMS`] of them and
/// then `… (N more)`. Linear in the items shown, whatever the length of the list.
pub fn list<T>(items: impl IntoIterator<Item = T>, show: impl Fn(T) -> String) -> String {
    let mut out = String::new();
    let mut rest = 0usize;
    for (i, item) in items.into_iter().enumerate() {
        if i >= MAX_LIST_ITEMS {
            rest += 1;
            continue;
        }
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&show(item));
    }
    if rest > 0 {
        let _ = write!(out, ", … ({rest} more)");
    }
    out
}

/// Names quoted and listed: `"a", "b", … (3 more)`.
pub fn names<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    list(items, quoted)
}

/// `text` cut to at most `max` bytes at a character boundary, saying how much was cut.
pub fn cap(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let total = text.len();
    let note = format!("… ({total} bytes in all, cut)");
    let mut end = max.saturating_sub(note.len());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&note);
    text
}

/// `text` cut to [`MAX_MESSAGE_BYTES`]: for condition messages and Event notes.
pub fn cap_message(text: String) -> String {
    cap(text, MAX_MESSAGE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_escaped_and_elided() {
        assert_eq!(quoted("extract"), r#""extract""#);
        assert_eq!(quoted("a\u{1b}[31mb"), r#""a\u{1b}[31mb""#);
        assert_eq!(quoted("nul\0"), r#""nul\0""#);
        let long = "x".repeat(200_000);
        let shown = quoted(&long);
        assert!(shown.len() < 100, "{shown}");
        assert!(shown.ends_with("…\" (200000 characters)"), "{shown}");
        assert_eq!(
            quoted(&"y".repeat(MAX_NAME_CHARS)).len(),
            MAX_NAME_CHARS + 2
        );
    }

    #[test]
    fn lists_are_bounded() {
        assert_eq!(names(["a", "b"]), r#""a", "b""#);
        let many: Vec<String> = (0..100_000).map(|i| format!("t{i}")).collect();
        let shown = names(many.iter().map(String::as_str));
        assert!(shown.ends_with(", … (99980 more)"), "{shown}");
        assert!(shown.len() < 300, "{}", shown.len());
        assert_eq!(list(Vec::<u32>::new(), |n| n.to_string()), "");
    }

    #[test]
    fn messages_are_capped_at_a_char_boundary() {
        assert_eq!(cap("short".into(), 10), "short");
        let text = "é".repeat(50_000);
        let capped = cap_message(text);
        assert!(capped.len() <= MAX_MESSAGE_BYTES);
        assert!(
            capped.ends_with("(100000 bytes in all, cut)"),
            "{}",
            &capped[capped.len() - 40..]
        );
    }
}
