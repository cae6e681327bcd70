//! What every YAML reader in marksync shares: parser options, permissive scalars, mappings kept
//! in document order, and error messages without the parser's own decoration.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde_saphyr::Spanned;

/// The message of a YAML error without serde-saphyr's own location suffix and snippet (we print
/// ours, with the file name).
pub fn message(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    let first = text.lines().next().unwrap_or_default();
    let trimmed = match first.rfind(" at line ") {
        Some(i) => &first[..i],
        None => first,
    };
    trimmed.trim_end_matches(':').trim().to_string()
}

/// Options for every YAML document marksync reads: duplicate keys are handled by our visitors
/// (so all of them are reported, with both places); the budget is sized for a million pairs.
pub fn options() -> serde_saphyr::options::Options {
    let mut options = serde_saphyr::options::Options::default();
    options.duplicate_keys = serde_saphyr::options::DuplicateKeyPolicy::PassThrough;
    options.with_snippet = false;
    let mut budget = serde_saphyr::budget::Budget::default();
    budget.max_events = 100_000_000;
    budget.max_nodes = 50_000_000;
    budget.max_total_scalar_bytes = 1 << 30;
    budget.max_reader_input_bytes = Some(1 << 30);
    options.budget = Some(budget);
    options
}

/// Options for desired files: [`options`], plus what makes keys and names the text as written
/// and the messages the user's. Merge keys (`<<`) are read as ordinary keys so that the desired
/// reader merges them itself and reports a section given twice (serde-saphyr's merge would let one
/// silently win). The alias-to-anchor ratio check is off: reusing one anchor for a hundred groups
/// is a normal roster; alias bombs stay bounded by the replay limits (events replayed in total and
/// nesting of aliases), which cap the work whatever the ratio.
pub fn desired_options() -> serde_saphyr::options::Options {
    let mut options = options();
    options.merge_keys = serde_saphyr::options::MergeKeyPolicy::AsOrdinary;
    options.reject_unsupported_tags = true;
    options.non_finite_float_policy = serde_saphyr::options::NonFiniteFloatPolicy::AsString;
    options.alias_limits.max_total_replayed_events = MAX_REPLAYED_EVENTS;
    if let Some(budget) = options.budget.as_mut() {
        budget.enforce_alias_anchor_ratio = false;
        budget.max_aliases = 10_000_000;
    }
    options
}

/// At most this many parser events are replayed from aliases in one file: far more than a roster
/// reusing its anchors needs, far less than an alias bomb (a billion laughs) asks for.
pub const MAX_REPLAYED_EVENTS: usize = 5_000_000;

/// A serde-saphyr error in the user's terms: the parser's own wording (`budget breached: Depth
/// {..}`, hints at its API) never reaches users.
pub fn user_message(e: &serde_saphyr::Error) -> String {
    let raw = message(e);
    let lower = raw.to_ascii_lowercase();
    if let Some(rest) = raw.strip_prefix("budget breached: ") {
        let what = rest.split([' ', '{', '(']).next().unwrap_or_default();
        return match what {
            "Depth" => "nesting deeper than 64 levels: a desired file needs 5 (groups, group, section, list)".into(),
            "Aliases" | "AliasAnchorRatio" | "RecordedAnchorEvents" | "RecordedAnchorBytes" => {
                "too many aliases (`*name`) or anchored data to read safely".into()
            }
            "Anchors" => "too many anchors (`&name`) to read safely".into(),
            "Documents" => "one document per file: found more than one".into(),
            "MergeKeys" => "too many merge keys (`<<`) to read safely".into(),
            _ => "the file is too large or too complex to read safely".into(),
        };
    }
    if lower.starts_with("multiple yaml documents") {
        return "one document per file: found a second document".into();
    }
    if lower.starts_with("alias replay") || lower.starts_with("alias expansion") {
        return format!(
            "aliases (`*name`) expand to too much data (at most {MAX_REPLAYED_EVENTS} values may be repeated through aliases); is this an alias bomb?"
        );
    }
    if let Some(tag) = raw.strip_prefix("unsupported tag ") {
        return format!(
            "unknown tag {tag}: desired files use no YAML tags (except `!!str`); remove it"
        );
    }
    if lower.contains("tagged scalar") {
        return "a YAML tag (`!!int`, `!!binary`...) is not allowed here; write the value without it".into();
    }
    if lower.starts_with("non-finite float") {
        return "`.inf` and `.nan` are not values marksync reads here".into();
    }
    if lower.contains("unknown anchor") || lower.contains("unknown value") {
        return "this alias (`*name`) refers to no anchor (`&name`) defined before it".into();
    }
    if lower.contains("recursive reference") {
        return "this alias (`*name`) refers to the node that contains it".into();
    }
    if lower.contains("null into string") {
        return "a key is missing here (`~`, `null` or nothing mean \"no value\" in YAML): write the key's name".into();
    }
    if lower.starts_with("expected string scalar") {
        return "a key here must be a name, found a list or a mapping".into();
    }
    if lower.contains("did not find expected key") {
        return "this line does not continue the mapping above it: check its indentation (the keys of one mapping line up) and that it reads `key: value`".into();
    }
    if lower.contains("mapping values are not allowed") {
        return "a `: ` here would start a mapping where none can start: check the indentation, or quote a value that contains `: `".into();
    }
    if lower.contains("unknown escape character") {
        return "unknown escape sequence in a double-quoted string: write `\\\\` for a backslash, or use single quotes".into();
    }
    if let Some(message) = parser_message(&raw, &lower) {
        return message;
    }
    if let Some(rest) = raw.strip_prefix("unexpected character: `") {
        let c = rest.trim_end_matches('\'');
        if let Some(c) = escaped_char(c).filter(|c| c.is_control()) {
            return format!(
                "this value contains control character {}, which a YAML file may not hold anywhere, not even inside quotes (and no account or group ID may contain it): remove it",
                control_name(c)
            );
        }
        return format!(
            "`{c}` cannot start a value: quote the value (`@`, `` ` `` and `%` must be quoted)"
        );
    }
    if lower.contains("cannot start any token") {
        return "this character cannot start a value: quote the value (`@`, `` ` `` and `%` must be quoted)".into();
    }
    // The parser's "while parsing X, found Y" context: keep what was found.
    match raw.strip_prefix("while ").and_then(|r| r.split_once(", ")) {
        Some((_, found)) => found.to_string(),
        None => raw,
    }
}

/// The YAML parser's own wording for malformed text, in the user's terms with what to do.
fn parser_message(raw: &str, lower: &str) -> Option<String> {
    let table: &[(&str, &str)] = &[
        (
            "did not find expected ',' or '}'",
            "expected `,` or `}` here: two entries of a `{...}` mapping need a comma between them, and the mapping a closing `}`",
        ),
        (
            "expected ',' or ']'",
            "expected `,` or `]` here: two items of a `[...]` list need a comma between them, and the list a closing `]`",
        ),
        (
            "may not precede any of `[{` in flow mapping",
            "write a space after the `:` inside `{...}`: `key: [1000]`, not `key:[1000]`",
        ),
        (
            "misplaced bracket",
            "this closing bracket has no opening bracket before it: remove it, or check the brackets before it",
        ),
        (
            "mismatched bracket",
            "this closing bracket does not match the one it closes: `[` closes with `]`, `{` with `}`",
        ),
        (
            "unclosed bracket",
            "this bracket is never closed: add the closing `]` or `}` (or the file is cut off)",
        ),
        (
            "did not find expected <document start>",
            "content after the end of the document (after `...` or a directive): one document per file; remove it",
        ),
        (
            "recursion limit exceeded",
            "brackets nested too deep to read: a desired file needs 5 levels (groups, group, section, list)",
        ),
        (
            "simple key expected ':'",
            "this key is not followed by `:` on its line: write `key: value` (a key cannot span lines), or quote a value that contains `?`",
        ),
        (
            "simple key is no longer valid",
            "this key is not followed by `:` on its line: write `key: value` (a key cannot span lines)",
        ),
        (
            "tabs disallowed",
            "a tab here: YAML indents with spaces only; replace the tab with spaces",
        ),
        (
            "tab cannot be used as indentation",
            "a tab in the indentation: YAML indents with spaces only; replace the tab with spaces",
        ),
        (
            "high surrogate without following low surrogate",
            "invalid `\\u` escape: a UTF-16 surrogate (\\ud800 to \\udfff) must be followed by its pair (such as \\ud83d\\ude00); write the character itself, or `\\U0001F600`",
        ),
        (
            "low surrogate",
            "invalid `\\u` escape: a UTF-16 surrogate (\\ud800 to \\udfff) must come in a pair (such as \\ud83d\\ude00); write the character itself, or `\\U0001F600`",
        ),
        (
            "a bom must not appear inside a document",
            "an invisible byte order mark (U+FEFF) inside the file, usually from joining two files: delete it",
        ),
        (
            "unexpected eof while parsing an implicit flow mapping",
            "an empty entry between two commas (`,,`) in a `[...]` list or `{...}` mapping: remove one comma, or write the missing value",
        ),
        (
            "unclosed quote",
            "this quote is never closed: add the closing quote (or the file is cut off)",
        ),
        (
            "did not find expected alphabetic or numeric character",
            "`&` and `*` start an anchor or an alias, which need a name: quote a value that starts with `&` or `*`",
        ),
        (
            "did not find expected comment or line break",
            "unexpected text after this: a `#` comment needs a space before it, and a block scalar (`|`, `>`) only takes its indicators on its line",
        ),
        (
            "did not find expected",
            "this is not valid YAML here: check the quotes, brackets and indentation around it",
        ),
        (
            "illegal placement of ':' indicator",
            "a `:` that follows nothing on its line: a key and its `:` must be on one line",
        ),
        (
            "invalid trailing content after",
            "text after the closing quote: quote the whole value, or end the value at the quote",
        ),
    ];
    table
        .iter()
        .find(|(pattern, _)| lower.contains(&pattern.to_ascii_lowercase()))
        .map(|(_, message)| message.to_string())
        .filter(|_| !raw.is_empty())
}

/// The character of the parser's escaped rendering (`\u{0}`, `\t`, `x`).
fn escaped_char(text: &str) -> Option<char> {
    if let Some(hex) = text.strip_prefix("\\u{").and_then(|h| h.strip_suffix('}')) {
        return u32::from_str_radix(hex, 16).ok().and_then(char::from_u32);
    }
    match text {
        "\\t" => Some('\t'),
        "\\r" => Some('\r'),
        "\\n" => Some('\n'),
        _ => {
            let mut chars = text.chars();
            let c = chars.next()?;
            chars.next().is_none().then_some(c)
        }
    }
}

/// `U+0000 NUL`, `U+001B ESCAPE`: a control character by its name.
fn control_name(c: char) -> String {
    let name = match c {
        '\0' => "NUL",
        '\u{7}' => "BELL",
        '\u{8}' => "BACKSPACE",
        '\u{1b}' => "ESCAPE",
        '\u{7f}' => "DELETE",
        _ => "",
    };
    if name.is_empty() {
        format!("U+{:04X}", u32::from(c))
    } else {
        format!("U+{:04X} {name}", u32::from(c))
    }
}

/// A scalar of any type; validation decides what is acceptable where.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    /// A string.
    Str(String),
    /// An integer.
    Int(i128),
    /// A number with a fraction or exponent.
    Float(f64),
    /// `true` or `false`.
    Bool(bool),
    /// An empty value.
    Null,
}

impl Scalar {
    /// The scalar as text (numbers printed back).
    pub fn text(&self) -> String {
        match self {
            Scalar::Str(s) => s.clone(),
            Scalar::Int(n) => n.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Null => String::new(),
        }
    }

    /// The scalar as text like [`Scalar::text`], borrowing a string instead of copying it.
    pub fn text_ref(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Scalar::Str(s) => std::borrow::Cow::Borrowed(s),
            other => std::borrow::Cow::Owned(other.text()),
        }
    }

    /// "a string", "an integer"...: for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Scalar::Str(_) => "a string",
            Scalar::Int(_) => "an integer",
            Scalar::Float(_) => "a fractional number",
            Scalar::Bool(_) => "a boolean",
            Scalar::Null => "nothing (null)",
        }
    }
}

/// The entries of a YAML mapping in document order, duplicates included (our validation reports
/// duplicates with both places).
pub struct Entries<K, V>(pub Vec<(K, V)>);

impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for Entries<K, V> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_<K, V>(PhantomData<(K, V)>);
        impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for V_<K, V> {
            type Value = Entries<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Entries(Vec::new()))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Entries(Vec::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry()? {
                    v.push(entry);
                }
                Ok(Entries(v))
            }
        }
        // `deserialize_any`, so that a list or a scalar is refused as "invalid type: sequence,
        // expected a mapping" rather than the parser's "expected mapping start".
        d.deserialize_any(V_(PhantomData))
    }
}

/// A value that should be a mapping (read as `T`), or the kind of what was found instead. Lets a
/// reader report "`members` must be a mapping ..., found a list" at the value's position and go
/// on to find the next problem, instead of stopping at the parser's "expected mapping start".
pub enum MapOr<T> {
    /// A mapping.
    Map(T),
    /// An empty value (`key:`, `~`, `null`): an empty mapping where that is allowed.
    Null,
    /// Something else: "a list", "a string"... (see [`Scalar::kind`]).
    Other(&'static str),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOr<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V_<T> {
            type Value = MapOr<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MapOr<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(MapOr::Map)
            }
            fn visit_unit<E: de::Error>(self) -> Result<MapOr<T>, E> {
                Ok(MapOr::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<MapOr<T>, E> {
                self.visit_unit()
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<MapOr<T>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MapOr::Other("a list"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<MapOr<T>, E> {
                Ok(MapOr::Other("a boolean"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<MapOr<T>, E> {
                Ok(MapOr::Other("an integer"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<MapOr<T>, E> {
                Ok(MapOr::Other("an integer"))
            }
            fn visit_i128<E: de::Error>(self, _: i128) -> Result<MapOr<T>, E> {
                Ok(MapOr::Other("an integer"))
            }
            fn visit_u128<E: de::Error>(self, _: u128) -> Result<MapOr<T>, E> {
                Ok(MapOr::Other("an integer"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<MapOr<T>, E> {
                Ok(MapOr::Other("a fractional number"))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<MapOr<T>, E> {
                Ok(MapOr::Other("a string"))
            }
        }
        d.deserialize_any(V_(PhantomData))
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

pub struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a single value (a string or a number)")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Scalar, E> {
        Ok(Scalar::Int(i128::try_from(v).unwrap_or(i128::MAX)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
}

/// Reads a mapping with known keys into `on_key`, recording unknown and repeated keys instead of
/// stopping at them.
pub fn visit_known_keys<'de, A: MapAccess<'de>>(
    mut map: A,
    known: &[&str],
    mut on_key: impl FnMut(&Spanned<String>, &mut A) -> Result<(), A::Error>,
) -> Result<Vec<(Spanned<String>, String)>, A::Error> {
    let mut problems = Vec::new();
    let mut seen: Vec<(String, u64)> = Vec::new();
    while let Some(key) = map.next_key::<Spanned<String>>()? {
        if let Some((_, line)) = seen.iter().find(|(k, _)| *k == key.value) {
            let message = format!("duplicate key `{}` (first at line {line})", key.value);
            problems.push((key, message));
            map.next_value::<IgnoredAny>()?;
        } else if known.contains(&key.value.as_str()) {
            seen.push((key.value.clone(), key.referenced.line()));
            on_key(&key, &mut map)?;
        } else {
            let message = format!(
                "unknown key `{}`; expected {}",
                key.value,
                known
                    .iter()
                    .filter(|k| **k != "<<")
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            );
            problems.push((key, message));
            map.next_value::<IgnoredAny>()?;
        }
    }
    Ok(problems)
}

/// Any YAML value, with the position of every node: for small documents (the config) that are
/// checked key by key so that every problem is reported.
#[derive(Debug)]
pub enum Value {
    /// A scalar.
    Scalar(Scalar),
    /// A sequence.
    Seq(Vec<Spanned<Value>>),
    /// A mapping, in document order.
    Map(Vec<(Spanned<String>, Spanned<Value>)>),
}

impl Value {
    /// "a mapping", "a list" or the scalar's kind: for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Scalar(s) => s.kind(),
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut v = Vec::new();
                while let Some(item) = seq.next_element()? {
                    v.push(item);
                }
                Ok(Value::Seq(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let mut v = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    v.push(entry);
                }
                Ok(Value::Map(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Scalar(Scalar::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
                Ok(Value::Scalar(Scalar::Int(v.into())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
                Ok(Value::Scalar(Scalar::Int(v.into())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
                Ok(Value::Scalar(Scalar::Float(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
                Ok(Value::Scalar(Scalar::Str(v.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::Scalar(Scalar::Null))
            }
            fn visit_none<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::Scalar(Scalar::Null))
            }
        }
        d.deserialize_any(ValueVisitor)
    }
}
