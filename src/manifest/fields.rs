//! Field paths (`spec.tasks[3].retries.limit`) and the wording of problems with a field's value,
//! in the user's terms: what the field must be and what was given, never a library's type names.

use serde_json::Value;

use crate::text::{MAX_NAME_CHARS, quoted};

/// One step of a field path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// `spec.tasks[3].retries.limit`. A key that is not a plain word is quoted and, past
/// [`MAX_NAME_CHARS`] characters, elided, so a hostile key cannot blow up a message.
pub fn render<'a>(steps: impl IntoIterator<Item = Step<'a>>) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Index(i) => out.push_str(&format!("[{i}]")),
            Step::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&key_text(key));
            }
        }
    }
    out
}

/// `path` with `key` appended.
pub fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key_text(key)
    } else {
        format!("{path}.{}", key_text(key))
    }
}

/// A key as it appears in a path: bare when it is a plain word, otherwise quoted and bounded.
pub fn key_text(key: &str) -> String {
    let plain = !key.is_empty()
        && key.len() <= MAX_NAME_CHARS
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain { key.to_string() } else { quoted(key) }
}

/// What a value is, for `got …`: `"many"`, `99999999999`, `true`, `nothing`, `a list`.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quoted(s),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// The whole numbers a `format` allows, for the integer formats the API types use.
pub fn integer_range(format: Option<&str>) -> (i128, i128) {
    match format {
        Some("int8") => (i8::MIN.into(), i8::MAX.into()),
        Some("int16") => (i16::MIN.into(), i16::MAX.into()),
        Some("int32") => (i32::MIN.into(), i32::MAX.into()),
        Some("uint8") => (0, u8::MAX.into()),
        Some("uint16") => (0, u16::MAX.into()),
        Some("uint32") => (0, u32::MAX.into()),
        Some("uint64" | "uint") => (0, u64::MAX.into()),
        _ => (i64::MIN.into(), i64::MAX.into()),
    }
}

/// `a whole number from 0 to 4294967295`.
pub fn whole_number(range: (i128, i128)) -> String {
    format!("a whole number from {} to {}", range.0, range.1)
}

/// Why a whole number is out of `range`, or `None` when it fits.
pub fn range_error(number: &serde_json::Number, range: (i128, i128)) -> Option<String> {
    let value = match (number.as_i64(), number.as_u64()) {
        (Some(i), _) => i128::from(i),
        (None, Some(u)) => i128::from(u),
        // A whole number too large for 64 bits arrives as a float, e.g. 1e+23.
        (None, None) => match number.as_f64() {
            Some(f) if f < 0.0 => range.0 - 1,
            _ => range.1 + 1,
        },
    };
    if value > range.1 {
        Some(format!("{number} is above the maximum {}", range.1))
    } else if value < range.0 {
        Some(format!("{number} is below the minimum {}", range.0))
    } else {
        None
    }
}

/// Whether a JSON number is whole (an integer, or a float like `1e+23` without a fraction).
pub fn is_whole(number: &serde_json::Number) -> bool {
    number.is_i64() || number.is_u64() || number.as_f64().is_some_and(|f| f.fract() == 0.0)
}

/// A message of serde (or of a type's own `Deserialize`) in the user's terms.
///
/// Shapes handled, from feeding bad documents through serde_json and the API types:
/// `invalid type: X, expected Y`, `invalid value: X, expected Y`, `missing field `f``,
/// `unknown field `f`, expected …`, `unknown variant `v`, expected …`, `duplicate field `f``,
/// `invalid length N, expected …`; anything else (e.g. a timestamp parser's own words) is kept,
/// bounded. Returns `(child field, message)`: a missing field names the field itself.
pub fn translate(message: &str) -> (Option<String>, String) {
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((got, expected)) = split_expected(rest)
    {
        let expected = expected_text(expected);
        let scalar = ["integer ", "floating point ", "boolean "]
            .iter()
            .any(|p| got.starts_with(p));
        let hint = if scalar && expected == "a string" {
            "; quote it"
        } else {
            ""
        };
        return (
            None,
            format!("must be {expected}, got {}{hint}", got_text(got)),
        );
    }
    if let Some(rest) = message.strip_prefix("invalid value: ")
        && let Some((got, expected)) = split_expected(rest)
    {
        if let Some(range) = integer_type_range(expected)
            && let Some(number) = got
                .strip_prefix("integer `")
                .and_then(|n| n.strip_suffix('`'))
                .and_then(|n| n.parse::<serde_json::Number>().ok())
        {
            return (
                None,
                range_error(&number, range)
                    .unwrap_or_else(|| format!("must be {}", whole_number(range))),
            );
        }
        return (
            None,
            format!("must be {}, got {}", expected_text(expected), got_text(got)),
        );
    }
    if let Some(field) = backticked(message, "missing field ") {
        return (Some(field.to_string()), "required field is missing".into());
    }
    if let Some(field) = backticked(message, "unknown field ") {
        return (Some(field.to_string()), "unknown field".into());
    }
    if let Some(field) = backticked(message, "duplicate field ") {
        return (Some(field.to_string()), "given more than once".into());
    }
    if let Some(variant) = backticked(message, "unknown variant ") {
        let allowed = message
            .split_once(", expected ")
            .map(|(_, list)| list.replace('`', ""))
            .unwrap_or_default();
        let allowed = allowed
            .strip_prefix("one of ")
            .unwrap_or(&allowed)
            .to_string();
        return (
            None,
            format!("must be one of {allowed}, got {}", quoted(variant)),
        );
    }
    if let Some(rest) = message.strip_prefix("invalid length ")
        && let Some((len, expected)) = rest.split_once(", expected ")
    {
        return (
            None,
            format!("has {len} entries, expected {}", expected.replace('`', "")),
        );
    }
    (None, crate::text::cap(message.replace('`', ""), 512))
}

/// `X, expected Y` split at the last `, expected ` (a string value may contain the words).
fn split_expected(rest: &str) -> Option<(&str, &str)> {
    rest.rsplit_once(", expected ")
}

/// The name in `prefix`\``name`\`…, if `message` has that shape.
fn backticked<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?.strip_prefix('`')?;
    rest.split_once('`').map(|(name, _)| name)
}

/// The range of a Rust integer type named in an `expected` description.
fn integer_type_range(expected: &str) -> Option<(i128, i128)> {
    Some(match expected {
        "u8" => (0, u8::MAX.into()),
        "u16" => (0, u16::MAX.into()),
        "u32" => (0, u32::MAX.into()),
        "u64" | "usize" => (0, u64::MAX.into()),
        "i8" => (i8::MIN.into(), i8::MAX.into()),
        "i16" => (i16::MIN.into(), i16::MAX.into()),
        "i32" => (i32::MIN.into(), i32::MAX.into()),
        "i64" | "isize" => (i64::MIN.into(), i64::MAX.into()),
        _ => return None,
    })
}

/// What serde's `expected …` means to someone writing YAML.
fn expected_text(expected: &str) -> String {
    if let Some(range) = integer_type_range(expected) {
        return whole_number(range);
    }
    match expected {
        "f32" | "f64" => "a number".into(),
        "a string" | "a borrowed string" | "a char" | "a character" => "a string".into(),
        "a boolean" => "true or false".into(),
        "a sequence" => "a list".into(),
        "a map" => "a mapping".into(),
        "Quantity" => "a quantity such as \"500m\" or \"1Gi\"".into(),
        "unit" => "empty".into(),
        other => {
            let name = other.strip_prefix("struct ").unwrap_or(other);
            // The API types' own names (`EnvVar`, `ObjectMeta`, `struct Backoff`) are mappings.
            if !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric())
                && name.starts_with(|c: char| c.is_ascii_uppercase())
            {
                "a mapping".into()
            } else {
                crate::text::cap(other.replace('`', ""), 256)
            }
        }
    }
}

/// What serde's `Unexpected` description means: `string "x"` → `"x"`, `integer `5`` → `5`.
fn got_text(got: &str) -> String {
    if let Some(text) = got.strip_prefix("string ") {
        return bounded_debug_string(text);
    }
    for prefix in ["integer ", "floating point ", "boolean ", "character "] {
        if let Some(text) = got.strip_prefix(prefix) {
            return crate::text::cap(text.trim_matches('`').to_string(), 128);
        }
    }
    match got {
        "null" | "unit value" | "Option value" => "nothing".into(),
        "sequence" => "a list".into(),
        "map" => "a mapping".into(),
        other => crate::text::cap(other.replace('`', ""), 128),
    }
}

/// A `{:?}`-formatted string (quotes and escapes included) elided like [`quoted`].
fn bounded_debug_string(text: &str) -> String {
    let chars = text.chars().count();
    if chars <= MAX_NAME_CHARS + 2 {
        return text.to_string();
    }
    let head: String = text.chars().take(MAX_NAME_CHARS + 1).collect();
    format!("{head}…\" ({} characters, escaped)", chars - 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_fields_and_bound_keys() {
        let path = render([
            Step::Key("spec"),
            Step::Key("tasks"),
            Step::Index(3),
            Step::Key("retries"),
            Step::Key("limit"),
        ]);
        assert_eq!(path, "spec.tasks[3].retries.limit");
        assert_eq!(
            render([
                Step::Key("metadata"),
                Step::Key("labels"),
                Step::Key("app.io/x")
            ]),
            r#"metadata.labels."app.io/x""#
        );
        let hostile = "k".repeat(200_000);
        let path = render([Step::Key("spec"), Step::Key(&hostile)]);
        assert!(path.len() < 120, "{path}");
        assert!(path.ends_with("…\" (200000 characters)"), "{path}");
        assert_eq!(
            render([Step::Key("spec"), Step::Key("a\u{1b}[2J")]),
            r#"spec."a\u{1b}[2J""#
        );
        assert_eq!(child("spec.tasks[0]", "name"), "spec.tasks[0].name");
        assert_eq!(child("", "spec"), "spec");
        assert_eq!(child("metadata", "a b"), r#"metadata."a b""#);
    }

    /// Every message shape seen when feeding bad documents through serde_json and the API types.
    #[test]
    fn serde_messages_in_the_users_terms() {
        let table: &[(&str, Option<&str>, &str)] = &[
            (
                "invalid value: integer `99999999999`, expected u32",
                None,
                "99999999999 is above the maximum 4294967295",
            ),
            (
                "invalid value: integer `-1`, expected u32",
                None,
                "-1 is below the minimum 0",
            ),
            (
                "invalid value: integer `-5`, expected u64",
                None,
                "-5 is below the minimum 0",
            ),
            (
                "invalid type: string \"many\", expected u32",
                None,
                "must be a whole number from 0 to 4294967295, got \"many\"",
            ),
            (
                "invalid type: floating point `1.5`, expected u32",
                None,
                "must be a whole number from 0 to 4294967295, got 1.5",
            ),
            (
                "invalid type: floating point `1e+23`, expected u64",
                None,
                "must be a whole number from 0 to 18446744073709551615, got 1e+23",
            ),
            (
                "invalid type: string \"x\", expected i64",
                None,
                "must be a whole number from -9223372036854775808 to 9223372036854775807, got \"x\"",
            ),
            (
                "invalid type: string \"x\", expected a sequence",
                None,
                "must be a list, got \"x\"",
            ),
            (
                "invalid type: map, expected a sequence",
                None,
                "must be a list, got a mapping",
            ),
            (
                "invalid type: sequence, expected a map",
                None,
                "must be a mapping, got a list",
            ),
            (
                "invalid type: integer `5`, expected a string",
                None,
                "must be a string, got 5; quote it",
            ),
            (
                "invalid type: null, expected a string",
                None,
                "must be a string, got nothing",
            ),
            (
                "invalid type: boolean `true`, expected a string",
                None,
                "must be a string, got true; quote it",
            ),
            (
                "invalid type: string \"x\", expected f64",
                None,
                "must be a number, got \"x\"",
            ),
            (
                "invalid type: sequence, expected ObjectMeta",
                None,
                "must be a mapping, got a list",
            ),
            (
                "invalid type: string \"x\", expected EnvVar",
                None,
                "must be a mapping, got \"x\"",
            ),
            (
                "invalid type: integer `4`, expected struct Backoff",
                None,
                "must be a mapping, got 4",
            ),
            (
                "invalid type: boolean `true`, expected Quantity",
                None,
                "must be a quantity such as \"500m\" or \"1Gi\", got true",
            ),
            (
                "invalid type: string \"x\", expected a boolean",
                None,
                "must be true or false, got \"x\"",
            ),
            (
                "missing field `name`",
                Some("name"),
                "required field is missing",
            ),
            (
                "unknown field `bogus`, expected `name` or `value`",
                Some("bogus"),
                "unknown field",
            ),
            (
                "duplicate field `name`",
                Some("name"),
                "given more than once",
            ),
            (
                "unknown variant `Bogus`, expected one of `Pending`, `Running`",
                None,
                "must be one of Pending, Running, got \"Bogus\"",
            ),
            (
                "invalid length 3, expected a tuple of size 2",
                None,
                "has 3 entries, expected a tuple of size 2",
            ),
            (
                "expected four digit year (or leading sign for six digit year), but found end of input",
                None,
                "expected four digit year (or leading sign for six digit year), but found end of input",
            ),
        ];
        for (message, field, expected) in table {
            let (got_field, got) = translate(message);
            assert_eq!(
                (got_field.as_deref(), got.as_str()),
                (*field, *expected),
                "{message}"
            );
        }
    }

    #[test]
    fn echoed_strings_are_bounded() {
        let long = format!(
            "invalid type: string {:?}, expected u32",
            "x".repeat(200_000)
        );
        let (_, message) = translate(&long);
        assert!(message.len() < 200, "{message}");
        assert!(
            message.contains("(200000 characters, escaped)"),
            "{message}"
        );
        let (_, message) = translate(&"y".repeat(100_000));
        assert!(message.len() <= 512);
    }

    #[test]
    fn ranges_of_whole_numbers() {
        let n = |t: &str| t.parse::<serde_json::Number>().unwrap();
        let u32_range = integer_range(Some("uint32"));
        assert_eq!(range_error(&n("4294967295"), u32_range), None);
        assert_eq!(
            range_error(&n("4294967296"), u32_range).unwrap(),
            "4294967296 is above the maximum 4294967295"
        );
        assert_eq!(
            range_error(&n("-1"), integer_range(Some("uint64"))).unwrap(),
            "-1 is below the minimum 0"
        );
        assert_eq!(
            range_error(&n("1e23"), integer_range(Some("uint64"))).unwrap(),
            "1e+23 is above the maximum 18446744073709551615"
        );
        assert!(is_whole(&n("1e23")));
        assert!(!is_whole(&n("1.5")));
    }
}
