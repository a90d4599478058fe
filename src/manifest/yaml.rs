//! YAML: the parser's budgets, its errors in the user's terms, and the scalars `kubectl` reads
//! differently (YAML 1.1 booleans).

use std::borrow::Cow;

use serde_json::Value;
use serde_saphyr::Error as YamlError;
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};

use super::fields::{Step, render};
use super::read::{MAX_FILE_BYTES, MAX_FILE_SIZE_TEXT};
use crate::text::quoted;

/// Deepest nesting of mappings and lists; real manifests need about 10 levels.
pub const MAX_DEPTH: usize = 64;
/// Most values (mappings, lists, scalars) in one file: a 100,000-task workflow has about 2.1
/// million, a 32 MiB manifest of the same density about 4 million. Each costs about 60 bytes
/// once parsed, so the bound keeps a file of tiny values (`[a,a,a,…]`) near 300 MB.
pub const MAX_NODES: usize = 5_000_000;
/// Most parser events in one file (about 1.25 per value in a workflow).
pub const MAX_EVENTS: usize = 8_000_000;
/// Most bytes of scalar text in one file, counting an aliased scalar every time it is used:
/// twice the largest file, so an alias cannot multiply a 100 KB string into gigabytes.
pub const MAX_SCALAR_BYTES: usize = 2 * MAX_FILE_BYTES;
/// Most values aliases may replay in one file: enough for anchors shared by thousands of tasks,
/// while a billion-laughs document stops after a fraction of a second.
pub const MAX_REPLAYED: usize = 200_000;
/// Most aliases and anchors in one file.
pub const MAX_ALIASES: usize = 50_000;
/// Most documents in one file.
pub const MAX_DOCUMENTS: usize = 1_024;

/// How ork reads YAML: YAML 1.2 booleans only (an input named `N` or a value `no` stays
/// text), duplicate keys refused, and budgets that refuse bombs quickly while a 100,000-task
/// workflow still parses.
pub fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        with_snippet: false,
        emit_comments: false,
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(MAX_FILE_BYTES),
            max_depth: MAX_DEPTH,
            flow_nesting_limit: MAX_DEPTH + 1,
            max_recorded_anchor_events: MAX_REPLAYED,
            max_recorded_anchor_bytes: MAX_SCALAR_BYTES,
            max_nodes: MAX_NODES,
            max_events: MAX_EVENTS,
            max_total_scalar_bytes: MAX_SCALAR_BYTES,
            max_aliases: MAX_ALIASES,
            max_anchors: MAX_ALIASES,
            max_documents: MAX_DOCUMENTS,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_REPLAYED,
            max_replay_stack_depth: MAX_DEPTH,
        },
    }
}

/// Every document of `text` as JSON values (empty documents left out), or what is wrong.
pub fn parse(text: &str) -> Result<Vec<Value>, String> {
    serde_saphyr::from_multiple_with_options(text, options()).map_err(|e| message(&e))
}

/// A YAML error in the user's terms, with where it is: `duplicate key "name" in a mapping
/// (line 7, column 3)`. Never the library's option or type names.
pub fn message(error: &YamlError) -> String {
    let text = describe(error);
    match error.location() {
        Some(at) if at.line() > 0 => {
            format!("{text} (line {}, column {})", at.line(), at.column())
        }
        _ => text,
    }
}

fn describe(error: &YamlError) -> String {
    match error {
        YamlError::WithSnippet { error, .. } | YamlError::AliasError { error, .. } => {
            describe(error)
        }
        YamlError::Budget { breach, .. } => budget(breach),
        YamlError::AliasReplayLimitExceeded { .. }
        | YamlError::AliasExpansionLimitExceeded { .. }
        | YamlError::AliasReplayCounterOverflow { .. } => {
            format!("aliases expand to more than {MAX_REPLAYED} values")
        }
        YamlError::AliasReplayStackDepthExceeded { .. } => {
            format!("aliases nested deeper than {MAX_DEPTH} levels")
        }
        YamlError::RecursiveReferencesRequireWeakTypes { .. } => {
            "an alias refers to itself (it is used inside the node its anchor names)".into()
        }
        YamlError::UnknownAnchor { .. } => {
            "an alias refers to an anchor that is not defined before it".into()
        }
        YamlError::DuplicateMappingKey { key: Some(key), .. } => {
            format!("duplicate key {} in a mapping", quoted(key))
        }
        YamlError::DuplicateMappingKey { key: None, .. } => "duplicate key in a mapping".into(),
        YamlError::NonFiniteFloat { value, .. } => {
            format!("{} is not a finite number", quoted(value))
        }
        YamlError::Eof { .. } => "unexpected end of the file".into(),
        YamlError::NullIntoString { .. } => {
            "a mapping key is empty or null (quote it if it is text)".into()
        }
        YamlError::InvalidUtf8Input => "the file is not UTF-8 text".into(),
        YamlError::MergeValueNotMapOrSeqOfMaps { .. } => {
            "a merge key (<<) must be given a mapping or a list of mappings".into()
        }
        YamlError::InvalidScalar { .. } => "a value does not match its tag (e.g. !!int)".into(),
        YamlError::Unexpected { expected, .. } if expected.contains("string") => {
            "a mapping key must be a scalar (text or a number), not a list or a mapping".into()
        }
        YamlError::SerdeInvalidType {
            unexpected,
            expected,
            ..
        } => {
            let (_, text) = super::fields::translate(&format!(
                "invalid type: {unexpected}, expected {expected}"
            ));
            text
        }
        YamlError::ExternalMessage { msg, .. } if msg.contains("recursion limit") => {
            format!("nesting deeper than {MAX_DEPTH} levels")
        }
        YamlError::ExternalMessage { msg, .. } | YamlError::Message { msg, .. } => {
            format!("invalid YAML: {}", crate::text::cap(msg.clone(), 256))
        }
        other => {
            use serde_saphyr::MessageFormatter;
            let text = serde_saphyr::UserMessageFormatter.format_message(other);
            format!("invalid YAML: {}", crate::text::cap(text.into_owned(), 256))
        }
    }
}

fn budget(breach: &BudgetBreach) -> String {
    match breach {
        BudgetBreach::Depth { .. } => format!("nesting deeper than {MAX_DEPTH} levels"),
        BudgetBreach::Nodes { .. } => {
            format!("more than {MAX_NODES} values (mappings, lists and scalars) in one file")
        }
        BudgetBreach::Events { .. } => format!("more than {MAX_EVENTS} YAML events in one file"),
        BudgetBreach::ScalarBytes { .. } => format!(
            "more than {} MiB of text in values in one file (an aliased value counts every \
             time it is used)",
            MAX_SCALAR_BYTES >> 20
        ),
        BudgetBreach::Aliases { .. } => format!("more than {MAX_ALIASES} aliases in one file"),
        BudgetBreach::Anchors { .. } => format!("more than {MAX_ALIASES} anchors in one file"),
        BudgetBreach::Documents { .. } => {
            format!("more than {MAX_DOCUMENTS} documents in one file")
        }
        BudgetBreach::AliasAnchorRatio { aliases, anchors } => {
            let s = if *anchors == 1 { "" } else { "s" };
            format!(
                "{aliases} aliases of only {anchors} anchor{s}: too many aliases for the \
                 anchors defined"
            )
        }
        BudgetBreach::MergeKeys { .. } => "too many merge keys (<<) in one file".into(),
        BudgetBreach::RecordedAnchorEvents { .. } | BudgetBreach::RecordedAnchorBytes { .. } => {
            format!("aliases expand to more than {MAX_REPLAYED} values")
        }
        BudgetBreach::InputBytes { .. } => {
            format!("the file is larger than {MAX_FILE_SIZE_TEXT}")
        }
        _ => format!(
            "the file is too large or too complex to read (at most {MAX_FILE_SIZE_TEXT}, \
             {MAX_NODES} values, {MAX_DEPTH} levels)"
        ),
    }
}

/// Plain scalars that YAML 1.1 readers (`kubectl`) take for booleans and YAML 1.2 (ork) for text.
const YAML11_BOOLEANS: [&str; 16] = [
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
    "OFF",
];

/// A plain scalar `kubectl` would read as a boolean.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Yaml11Boolean {
    /// Index of the document among the non-empty ones, as [`parse`] returns them.
    pub document: usize,
    /// Path of the field, e.g. `spec.tasks[0].inputs[0].name`; for a key, the path it makes.
    pub field: String,
    /// The scalar as written, e.g. `N`.
    pub text: String,
    /// Whether the scalar is a mapping key.
    pub key: bool,
}

impl Yaml11Boolean {
    /// The warning, without the file: `spec.tasks[0].inputs[0].name: N is read as a boolean by
    /// kubectl (YAML 1.1); quote it`.
    pub fn message(&self) -> String {
        let what = if self.key { "the key " } else { "" };
        let at = if self.field.is_empty() {
            String::new()
        } else {
            format!("{}: ", self.field)
        };
        format!(
            "{at}{what}{} is read as a boolean by kubectl (YAML 1.1); quote it",
            self.text
        )
    }
}

/// Whether `text` has a word that could be such a scalar: a cheap scan that lets a large
/// manifest without any skip the second parse. It may say yes wrongly (a word in a quoted
/// string), never no wrongly: a plain scalar `on` is the letters `on` between non-letters.
fn may_hold_yaml11_boolean(text: &str) -> bool {
    text.split(|c: char| !c.is_ascii_alphabetic())
        .any(|word| word.len() <= 3 && YAML11_BOOLEANS.contains(&word))
}

/// Where `text` holds a plain (unquoted, untagged) scalar that YAML 1.1 reads as a boolean.
///
/// ork reads YAML 1.2, where only `true` and `false` are booleans, so `N` or `on` stay text;
/// `kubectl apply` reads YAML 1.1 and turns them into booleans, then rejects the manifest or
/// changes it (a key `on:` becomes `true:`). The parsed values cannot tell `on` from `"on"`,
/// so the YAML events (which keep each scalar's style) are walked again, tracking the path.
/// Call it only on text that parsed; it stops quietly at the first parser error.
pub fn yaml11_booleans(text: &str) -> Vec<Yaml11Boolean> {
    let mut found = Vec::new();
    if !may_hold_yaml11_boolean(text) {
        return found;
    }
    let mut walk = Walk::default();
    for event in Parser::new_from_str(text) {
        let Ok((event, _)) = event else {
            break;
        };
        match event {
            Event::DocumentStart(..) => {
                walk.stack.clear();
                walk.at_root = true;
            }
            Event::Scalar(value, style, _, tag) => {
                let plain = style == ScalarStyle::Plain && tag.is_none();
                if walk.at_root {
                    let null = plain && matches!(&*value, "" | "~" | "null" | "Null" | "NULL");
                    walk.enter_document(!null);
                }
                if plain && YAML11_BOOLEANS.contains(&&*value) {
                    let key = walk.expects_key();
                    let mut field = walk.path();
                    if key {
                        field = super::fields::child(&field, &value);
                    }
                    found.push(Yaml11Boolean {
                        document: walk.document(),
                        field,
                        text: value.to_string(),
                        key,
                    });
                }
                walk.node_done(Some(value));
            }
            Event::SequenceStart(..) => {
                walk.enter_document(true);
                walk.stack.push(Frame::Seq(0));
            }
            Event::MappingStart(..) => {
                walk.enter_document(true);
                walk.stack.push(Frame::Map {
                    key: None,
                    expects_key: true,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                walk.stack.pop();
                walk.node_done(None);
            }
            Event::Alias(_) => {
                walk.enter_document(true);
                walk.node_done(None);
            }
            _ => {}
        }
    }
    found
}

/// Where the walk is in a document.
enum Frame<'a> {
    /// In a list, at this index.
    Seq(usize),
    /// In a mapping, after `key` (`None` before the first, or after a key that is not a scalar).
    Map {
        key: Option<Cow<'a, str>>,
        expects_key: bool,
    },
}

#[derive(Default)]
struct Walk<'a> {
    stack: Vec<Frame<'a>>,
    /// Documents seen that hold something (empty ones are left out, as [`parse`] does).
    kept: usize,
    at_root: bool,
}

impl<'a> Walk<'a> {
    fn enter_document(&mut self, holds_something: bool) {
        if self.at_root {
            self.at_root = false;
            if holds_something {
                self.kept += 1;
            }
        }
    }

    fn document(&self) -> usize {
        self.kept.saturating_sub(1)
    }

    fn expects_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame::Map {
                expects_key: true,
                ..
            })
        )
    }

    fn path(&self) -> String {
        render(self.stack.iter().filter_map(|frame| match frame {
            Frame::Seq(i) => Some(Step::Index(*i)),
            Frame::Map {
                key: Some(key),
                expects_key: false,
            } => Some(Step::Key(key)),
            Frame::Map { .. } => None,
        }))
    }

    /// A node ended in its parent: move to the next index, or from key to value and back.
    fn node_done(&mut self, scalar: Option<Cow<'a, str>>) {
        match self.stack.last_mut() {
            Some(Frame::Seq(i)) => *i += 1,
            Some(Frame::Map { key, expects_key }) => {
                if *expects_key {
                    *key = scalar;
                }
                *expects_key = !*expects_key;
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml_error(text: &str) -> String {
        match parse(text) {
            Ok(values) => panic!("parsed: {values:?}"),
            Err(message) => message,
        }
    }

    /// Every YAML error shape found by feeding bad documents, in the user's terms.
    #[test]
    fn yaml_errors_in_the_users_terms() {
        let deep = format!("a: {}{}\n", "[".repeat(70), "]".repeat(70));
        let deep_block: String = (0..70)
            .map(|i| format!("{}k:\n", "  ".repeat(i)))
            .collect::<String>()
            + &"  ".repeat(70)
            + "v\n";
        let table: &[(&str, &str)] = &[
            (
                "a: 1\nb: 2\na: 3\n",
                "duplicate key \"a\" in a mapping (line 3, column 1)",
            ),
            (
                "spec: {tasks: [{name: t, name: u}]}\n",
                "duplicate key \"name\" in a mapping (line 1, column 26)",
            ),
            (&deep, "nesting deeper than 64 levels"),
            (&deep_block, "nesting deeper than 64 levels"),
            ("a: &x [*x]\n", "an alias refers to itself"),
            (
                "a: *nope\n",
                "an alias refers to an anchor that is not defined before it",
            ),
            ("a: 1e999\n", "\"1e999\" is not a finite number"),
            ("a: .nan\n", "\".nan\" is not a finite number"),
            ("? [1]\n: 2\n", "a mapping key must be a scalar"),
            ("a: !!int x\n", "a value does not match its tag"),
            ("- [a\n", "invalid YAML: "),
            ("a: b: c\n", "invalid YAML: "),
            ("a: 'x\n", "invalid YAML: "),
            ("<<: 1\n", "a merge key (<<) must be given a mapping"),
            (
                "a: 1\n: 2\n",
                "a mapping key is empty or null (quote it if it is text)",
            ),
            ("{null: 1}\n", "a mapping key is empty or null"),
        ];
        for (text, expected) in table {
            let message = yaml_error(text);
            assert!(
                message.starts_with(expected),
                "{text:?}: {message:?} does not start with {expected:?}"
            );
            for library_word in ["Options", "Policy", "budget", "Depth {", "weak"] {
                assert!(!message.contains(library_word), "{message}");
            }
        }
    }

    #[test]
    fn bombs_are_refused_quickly() {
        let started = std::time::Instant::now();
        // A 100 KB scalar aliased 40,000 times: 4 GB of text.
        let mut bomb = format!("a: &a '{}'\nb:\n", "x".repeat(100_000));
        bomb.push_str(&"- *a\n".repeat(40_000));
        assert!(yaml_error(&bomb).starts_with("more than 64 MiB of text in values"));
        // Billion laughs: each level lists the one before ten times.
        let mut laughs = String::from("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..10 {
            let p = i - 1;
            laughs.push_str(&format!(
                "l{i}: &l{i} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]\n"
            ));
        }
        let message = yaml_error(&laughs);
        assert!(
            message.starts_with("aliases expand to more than"),
            "{message}"
        );
        let documents = "---\na: 1\n".repeat(MAX_DOCUMENTS + 1);
        assert!(yaml_error(&documents).starts_with("more than 1024 documents"));
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    fn booleans(text: &str) -> Vec<String> {
        yaml11_booleans(text)
            .into_iter()
            .map(|b| format!("{}: {}", b.document, b.message()))
            .collect()
    }

    #[test]
    fn finds_scalars_kubectl_reads_as_booleans() {
        let text = "spec:\n  tasks:\n  - name: t\n    inputs:\n    - name: N\n      value: 'no'\n    \
                    - {name: \"Y\", value: yes}\n    args: [on, \"off\", !!str OFF, Off]\n\
                    on: 1\n'y': 2\nlabels: {n: x, ok: true}\n";
        assert_eq!(
            booleans(text),
            [
                "0: spec.tasks[0].inputs[0].name: N is read as a boolean by kubectl (YAML 1.1); quote it",
                "0: spec.tasks[0].inputs[1].value: yes is read as a boolean by kubectl (YAML 1.1); quote it",
                "0: spec.tasks[0].args[0]: on is read as a boolean by kubectl (YAML 1.1); quote it",
                "0: spec.tasks[0].args[3]: Off is read as a boolean by kubectl (YAML 1.1); quote it",
                "0: on: the key on is read as a boolean by kubectl (YAML 1.1); quote it",
                "0: labels.n: the key n is read as a boolean by kubectl (YAML 1.1); quote it",
            ]
        );
    }

    #[test]
    fn numbers_documents_as_parse_does() {
        // The empty first document is left out by `parse`, so `y` is in document 1 of 2.
        let text = "---\n---\na: 1\n---\n~\n---\n- [x]\n- {k: y}\n";
        assert_eq!(parse(text).unwrap().len(), 2);
        assert_eq!(
            booleans(text),
            ["1: [1].k: y is read as a boolean by kubectl (YAML 1.1); quote it"]
        );
        assert_eq!(
            booleans("a: onward\nb: 'on'\nc: \"N\"\n"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_prefilter_never_misses_a_plain_boolean() {
        for text in [
            "a: on\n",
            "on: 1\n",
            "[Y]\n",
            "{a: NO}\n",
            "- OFF\n",
            "a:\n  n\n",
            "--- yes\n",
        ] {
            assert!(may_hold_yaml11_boolean(text), "{text:?}");
            assert_eq!(yaml11_booleans(text).len(), 1, "{text:?}");
        }
        assert!(!may_hold_yaml11_boolean(
            "name: busybox\ncommand: ['true']\n"
        ));
    }
}
