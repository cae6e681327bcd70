//! Raw, permissive shapes: they accept anything scalar so that value errors can be reported with
//! their location and the parse can go on to find the next problem.

use super::*;

/// The top level of a desired file.
pub(super) struct RawFile {
    pub(super) groups: Option<Spanned<MapOr<Groups>>>,
    pub(super) unknown: Vec<(Spanned<String>, String)>,
}

/// `groups`: group ID -> its sections, as written.
pub(super) type Groups = Entries<Spanned<Item>, Spanned<MapOr<RawGroup>>>;

/// One group: `members` and `marks` (each with its key), and its merge keys (`<<`).
#[derive(Default)]
pub(super) struct RawGroup {
    pub(super) members: Option<(Spanned<String>, Spanned<MapOr<Section>>)>,
    pub(super) marks: Option<(Spanned<String>, Spanned<MapOr<Section>>)>,
    pub(super) merges: Vec<(Spanned<String>, Spanned<MergeValue>)>,
    pub(super) unknown: Vec<(Spanned<String>, String)>,
}

/// Where a group's `members` or `marks` came from: the group itself or a merge key.
pub(super) struct SectionSource {
    pub(super) section: Spanned<MapOr<Section>>,
    /// Where the section's key is (a null section is reported there).
    pub(super) key: serde_saphyr::Location,
    /// The line of the section's key (for a merged section: in the merged mapping).
    pub(super) line: u64,
    /// The line of the merge key (`<<`) it came through, if any.
    pub(super) via: Option<u64>,
}

impl SectionSource {
    fn describe(&self) -> String {
        match self.via {
            None => format!("line {}", self.line),
            Some(m) => format!("line {} (merged through `<<` at line {m})", self.line),
        }
    }
}

/// Gathers a group's sections, its own first, then those of its merge keys (recursively).
pub(super) fn collect_sections(
    cx: &Cx<'_>,
    group: RawGroup,
    via: Option<u64>,
    members_from: &mut Option<SectionSource>,
    marks_from: &mut Option<SectionSource>,
    errors: &mut Vec<Diagnostic>,
) {
    for (key, message) in &group.unknown {
        errors.push(cx.at(key, message.clone()));
    }
    for (name, slot, entry) in [
        ("members", &mut *members_from, group.members),
        ("marks", &mut *marks_from, group.marks),
    ] {
        let Some((key, section)) = entry else {
            continue;
        };
        let here = SectionSource {
            section,
            key: key.referenced,
            line: key.defined.line() + cx.line_offset,
            via,
        };
        match slot {
            None => *slot = Some(here),
            Some(first) => errors.push(cx.at(
                &key,
                format!(
                    "duplicate key `{name}`: the group gets `{name}` from {} and from {}; a merge key (`<<`) may not repeat or shadow a section",
                    first.describe(),
                    here.describe()
                ),
            )),
        }
    }
    for (key, value) in group.merges {
        // Only a plain `<<` merges; quoted or tagged, it is an ordinary key, and unknown.
        if matches!(cx.written(&key), Written::Quoted) || cx.tag_before(&key).is_some() {
            errors.push(cx.at(
                &key,
                "unknown key `<<` (quoted or tagged, so not a merge key); expected `members` or `marks`",
            ));
            continue;
        }
        let line = cx.line(&key);
        let what = "a merge key (`<<`) takes a mapping or a list of mappings (usually aliases such as `*template`)";
        match value.value {
            MergeValue::Maps(maps) => {
                for m in maps {
                    match m.value {
                        MapOr::Map(g) => {
                            collect_sections(cx, g, Some(line), members_from, marks_from, errors)
                        }
                        MapOr::Null => errors.push(cx.at(&m, NULL_MERGE)),
                        MapOr::Other(kind) => {
                            errors.push(cx.at(&m, format!("{what}, found {kind}")))
                        }
                    }
                }
            }
            MergeValue::Null => errors.push(cx.at(&key, NULL_MERGE)),
            MergeValue::Other(kind) => errors.push(cx.at(&value, format!("{what}, found {kind}"))),
        }
    }
}

/// A merge key, or an item of its list, that is null: never "merge nothing".
const NULL_MERGE: &str = "a merge key (`<<`) has no value here: the file may be cut off; write the alias (such as `*template`) or remove the `<<`";

/// The value of a merge key: one mapping or a list of them.
pub(super) enum MergeValue {
    Maps(Vec<Spanned<MapOr<RawGroup>>>),
    /// `<<:` with nothing after it, `~` or `null`.
    Null,
    Other(&'static str),
}

impl<'de> Deserialize<'de> for MergeValue {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_;
        impl<'de> Visitor<'de> for V_ {
            type Value = MergeValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping or a list of mappings")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MergeValue, A::Error> {
                let g = RawGroup::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let at = serde_saphyr::Location::UNKNOWN;
                Ok(MergeValue::Maps(vec![Spanned::new(MapOr::Map(g), at, at)]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MergeValue, A::Error> {
                let mut v = Vec::new();
                while let Some(item) = seq.next_element()? {
                    v.push(item);
                }
                Ok(MergeValue::Maps(v))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<MergeValue, E> {
                Ok(MergeValue::Other("a boolean"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<MergeValue, E> {
                Ok(MergeValue::Other("an integer"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<MergeValue, E> {
                Ok(MergeValue::Other("an integer"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<MergeValue, E> {
                Ok(MergeValue::Other("a fractional number"))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<MergeValue, E> {
                Ok(MergeValue::Other("a string"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<MergeValue, E> {
                Ok(MergeValue::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<MergeValue, E> {
                self.visit_unit()
            }
        }
        d.deserialize_any(V_)
    }
}

/// A key or list item where a single value (account, mark, group ID) belongs, or the kind of
/// collection found there instead, kept so that it is reported with its position and the parse
/// goes on.
pub(super) enum Item {
    /// A single value.
    Scalar(Scalar),
    /// A list or mapping: "a list" or "a mapping".
    Collection(&'static str),
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = Item;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                ScalarVisitor.expecting(f)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Item::Collection("a list"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Item::Collection("a mapping"))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Item, E> {
                ScalarVisitor.visit_bool(v).map(Item::Scalar)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Item, E> {
                ScalarVisitor.visit_i64(v).map(Item::Scalar)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Item, E> {
                ScalarVisitor.visit_u64(v).map(Item::Scalar)
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Item, E> {
                ScalarVisitor.visit_i128(v).map(Item::Scalar)
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Item, E> {
                ScalarVisitor.visit_u128(v).map(Item::Scalar)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Item, E> {
                ScalarVisitor.visit_f64(v).map(Item::Scalar)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Item, E> {
                ScalarVisitor.visit_str(v).map(Item::Scalar)
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Item, E> {
                ScalarVisitor.visit_string(v).map(Item::Scalar)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Item, E> {
                Ok(Item::Scalar(Scalar::Null))
            }
            fn visit_none<E: de::Error>(self) -> Result<Item, E> {
                Ok(Item::Scalar(Scalar::Null))
            }
        }
        d.deserialize_any(ItemVisitor)
    }
}

/// `members` (account -> marks) or `marks` (mark -> accounts), keys and values as written.
pub(super) type Section = Entries<Spanned<Item>, Spanned<Node>>;

/// A value that should be a list; anything else is kept to be reported.
pub(super) enum Node {
    Seq(Vec<Spanned<Item>>),
    Scalar(Scalar),
    Map,
}

impl Node {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Node::Seq(_) => "a list",
            Node::Scalar(s) => s.kind(),
            Node::Map => "a mapping",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NodeVisitor;
        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(2));
                while let Some(item) = seq.next_element::<Spanned<Item>>()? {
                    // An item of a mark or account list makes one pair; one reached through an
                    // alias (its own or an enclosing one) was added by it.
                    if item.referenced != item.defined && !note_alias_pair() {
                        return Err(de::Error::custom("aliases add too many pairs"));
                    }
                    v.push(item);
                }
                Ok(Node::Seq(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Node::Map)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
                ScalarVisitor.visit_bool(v).map(Node::Scalar)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
                ScalarVisitor.visit_i64(v).map(Node::Scalar)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
                ScalarVisitor.visit_u64(v).map(Node::Scalar)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
                ScalarVisitor.visit_f64(v).map(Node::Scalar)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
                ScalarVisitor.visit_str(v).map(Node::Scalar)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Scalar(Scalar::Null))
            }
            fn visit_none<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Scalar(Scalar::Null))
            }
        }
        d.deserialize_any(NodeVisitor)
    }
}

impl<'de> Deserialize<'de> for RawFile {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FileVisitor;
        impl<'de> Visitor<'de> for FileVisitor {
            type Value = RawFile;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping with a `groups` key")
            }
            fn visit_unit<E: de::Error>(self) -> Result<RawFile, E> {
                Ok(RawFile {
                    groups: None,
                    unknown: Vec::new(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawFile, A::Error> {
                let mut groups = None;
                let unknown = visit_known_keys(map, &["groups"], |_, map| {
                    groups = Some(map.next_value()?);
                    Ok(())
                })?;
                Ok(RawFile { groups, unknown })
            }
        }
        d.deserialize_map(FileVisitor)
    }
}

impl<'de> Deserialize<'de> for RawGroup {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct GroupVisitor;
        impl<'de> Visitor<'de> for GroupVisitor {
            type Value = RawGroup;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping with `members` and/or `marks`")
            }
            fn visit_unit<E: de::Error>(self) -> Result<RawGroup, E> {
                Ok(RawGroup::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawGroup, A::Error> {
                let mut group = RawGroup::default();
                let mut merges = Vec::new();
                group.unknown = visit_known_keys(map, &["members", "marks", "<<"], |key, map| {
                    match key.value.as_str() {
                        "members" => group.members = Some((key.clone(), map.next_value()?)),
                        "marks" => group.marks = Some((key.clone(), map.next_value()?)),
                        _ => merges.push((key.clone(), map.next_value()?)),
                    }
                    Ok(())
                })?;
                group.merges = merges;
                Ok(group)
            }
        }
        d.deserialize_map(GroupVisitor)
    }
}

thread_local! {
    /// While a document is read on this thread ([`alias_pairs_counted`]): the pairs aliases
    /// added so far, and the most allowed.
    static ALIAS_PAIRS: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, usize::MAX)) };
}

/// Counts one pair added through an alias; `false` once the count is over the cap.
fn note_alias_pair() -> bool {
    ALIAS_PAIRS.with(|c| {
        let (n, cap) = c.get();
        c.set((n + 1, cap));
        n < cap
    })
}

/// Runs `read` (one document's deserialization, on this thread) counting the pairs that aliases
/// add; the reading stops with an error as soon as they go over `cap`. Returns what `read`
/// returned and the count (over `cap` when that is why it stopped).
pub(super) fn alias_pairs_counted<T>(cap: usize, read: impl FnOnce() -> T) -> (T, usize) {
    let outer = ALIAS_PAIRS.with(|c| c.replace((0, cap)));
    let out = read();
    let (n, _) = ALIAS_PAIRS.with(|c| c.replace(outer));
    (out, n)
}
