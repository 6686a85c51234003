//! A mapping file (`mappings/<vendor>/<object>.yaml`), read and checked once when loaded:
//! every JSONPath parsed, every value map named exists, every event type known — so a
//! mapping that loads cannot fail for a reason of its own at run time.
//!
//! ```yaml
//! mapping: salesforce/opportunity      # its name: the file's path under mappings/
//! version: 3                           # bumped on every change (stamped on each event)
//! description: Salesforce Opportunity (REST record) → OpportunityClosedWon
//! require:                             # every guard must hold, else refused with its path
//!   - {path: $.StageName, equals: Closed Won}
//! emit:
//!   each: $.records[*]                 # optional: one event per node (else the document)
//!   source: o2c.crm
//!   detail_type: OpportunityClosedWon
//!   detail:                            # the o2c envelope and payload, field by field
//!     event_id: {uuid_from: [salesforce, $.Id, $.SystemModstamp]}
//!     payload:
//!       opportunity_id: $.Id           # a string starting with `$`: a JSONPath
//!       stage: Closed Won              # any other string: itself
//!       amount: {path: $.Amount, as: decimal, scale: 2}
//!       region: {path: $.Region__c, map: regions}
//!       lines: {each: $.OpportunityLineItems.records[*], to: {line_id: $.Id}}
//! maps:
//!   regions: {DE: EMEA-DE}
//! ```
//!
//! A field is a JSONPath string, a constant, a nested object, or an operation — an object
//! with one of `path`, `first_of` (a list of paths: the first that selects a value neither
//! null nor blank), `template` (`"corr-{$.Id}"`), `const`, `each` + `to`, `uuid_from` —
//! refined by `as` (`string`, `integer`, `decimal` with `scale`, `date`, `datetime` — both
//! also read OData V2's `/Date(ms)/` —, `minor_units` with `currency`), `map`, `case` (`lower` / `upper`), `default` and
//! `optional` (the field is left out when the path selects nothing) and `from: document`
//! (inside `each`, read the whole document: a bank account stated once for all entries). `redact` lists input
//! paths holding secrets, replaced before an unmappable payload is parked.

use std::collections::BTreeMap;

use o2c_domain::events::EventType;
use serde_json::Value;
use serde_json_path::JsonPath;

/// Why a mapping file cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}", .problems.join("; "))]
pub struct SpecError {
    /// The file.
    pub file: String,
    /// Every problem found.
    pub problems: Vec<String>,
}

/// What a field's value is converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum As {
    /// A string (numbers and booleans are written out).
    String,
    /// An integer.
    Integer,
    /// An exact decimal as a string (`"1250000.00"`); at most `scale` decimals.
    Decimal,
    /// `YYYY-MM-DD` (from a date, a timestamp, seconds since the epoch, or OData V2's
    /// `/Date(milliseconds)/`: the UTC date of that instant).
    Date,
    /// RFC 3339 UTC (from a timestamp, seconds since the epoch, or OData V2's
    /// `/Date(milliseconds[±minutes])/`, whose milliseconds are UTC whatever the offset).
    DateTime,
    /// An integer count of the currency's minor units → a decimal string.
    MinorUnits,
    /// The selected JSON as is.
    Json,
}

/// One field of the output.
#[derive(Debug, Clone)]
pub enum Field {
    /// A constant.
    Const(Value),
    /// A nested object.
    Object(BTreeMap<String, Field>),
    /// A computed value.
    Op(Box<Op>),
}

/// How a computed value is found.
#[derive(Debug, Clone)]
pub enum Source {
    /// One node selected by a JSONPath.
    Path(String, JsonPath),
    /// A text with `{jsonpath}` holes.
    Template(Vec<Part>),
    /// An array: `to` for each node `each` selects (paths inside relative to the node).
    Each(String, JsonPath, Field),
    /// A UUID v5 of the values (a stable id for a vendor record's version).
    UuidFrom(Vec<Field>),
    /// The first of these JSONPaths that selects a value neither null nor blank text (a
    /// vendor that leaves a field empty rather than out: SAP's OData).
    FirstOf(Vec<(String, JsonPath)>),
}

/// A piece of a template.
#[derive(Debug, Clone)]
pub enum Part {
    /// Literal text.
    Text(String),
    /// A JSONPath's value.
    Path(String, JsonPath),
}

/// A computed field and its refinements.
#[derive(Debug, Clone)]
pub struct Op {
    /// Where the value comes from.
    pub source: Source,
    /// Conversion.
    pub as_: As,
    /// For `decimal`: at most this many decimals (never rounded: more is refused).
    pub scale: Option<u32>,
    /// For `minor_units`: the currency code.
    pub currency: Option<Field>,
    /// A value map by name.
    pub map: Option<String>,
    /// `lower` / `upper`.
    pub case: Option<bool>,
    /// Used when the path selects nothing.
    pub default: Option<Value>,
    /// Left out when the path selects nothing.
    pub optional: bool,
    /// The path reads the whole document, not the node `each` is at (`from: document`).
    pub from_document: bool,
    /// For `minor_units`: exponents that differ from ISO 4217's for this vendor (Stripe
    /// counts ISK and UGX in hundredths).
    pub exponents: BTreeMap<String, u32>,
}

/// A guard on the input.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The path it reads.
    pub path: (String, JsonPath),
    /// The value it must have (else it must merely exist).
    pub equals: Option<Value>,
    /// Or one of these.
    pub one_of: Option<Vec<Value>>,
}

/// What one mapping emits.
#[derive(Debug, Clone)]
pub struct Emit {
    /// One event per node this selects (else one for the document).
    pub each: Option<(String, JsonPath)>,
    /// The event's `source`.
    pub source: String,
    /// Its type.
    pub event_type: EventType,
    /// The `detail`.
    pub detail: Field,
}

/// The input's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON.
    Json,
    /// XML, read as JSON (see [`crate::xml`]).
    Xml,
}

/// A loaded, checked mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// `vendor/object`.
    pub name: String,
    /// Its version.
    pub version: u32,
    /// What it maps.
    pub description: String,
    /// The input's format.
    pub format: Format,
    /// Guards.
    pub require: Vec<Guard>,
    /// The event it makes.
    pub emit: Emit,
    /// Value maps.
    pub maps: BTreeMap<String, BTreeMap<String, Value>>,
    /// XML elements always read as arrays (`format: xml`).
    pub xml_arrays: Vec<String>,
    /// Input paths whose values are secrets (a client secret, a token): replaced before
    /// an unmappable payload is parked.
    pub redact: Vec<(String, JsonPath)>,
}

impl Mapping {
    /// Reads a payload in the mapping's format (XML with its `xml_arrays`).
    pub fn read(&self, bytes: &[u8]) -> Result<Value, crate::MapIssue> {
        match self.format {
            Format::Json => crate::parse_input(Format::Json, bytes),
            Format::Xml => crate::xml::to_json_with(bytes, &self.xml_arrays).map_err(|e| crate::MapIssue {
                field: String::new(),
                path: "$".into(),
                message: format!("not XML: {e}"),
            }),
        }
    }

    /// `doc` with every `redact` path's value replaced by `"[redacted]"`.
    pub fn redacted(&self, mut doc: Value) -> Value {
        for (_, p) in &self.redact {
            let pointers: Vec<String> = p.query_located(&doc).locations().map(|l| l.to_json_pointer()).collect();
            for ptr in pointers {
                if let Some(v) = doc.pointer_mut(&ptr) {
                    *v = Value::String("[redacted]".into());
                }
            }
        }
        doc
    }
}

const OPS: [&str; 6] = ["path", "first_of", "template", "const", "each", "uuid_from"];
const REFINEMENTS: [&str; 10] = ["as", "scale", "currency", "map", "case", "default", "optional", "to", "exponents", "from"];

struct Parser<'a> {
    problems: Vec<String>,
    maps: &'a BTreeMap<String, BTreeMap<String, Value>>,
}

impl Parser<'_> {
    fn path(&mut self, at: &str, text: &str) -> Option<(String, JsonPath)> {
        match JsonPath::parse(text) {
            Ok(p) => Some((text.to_owned(), p)),
            Err(e) => {
                self.problems.push(format!("{at}: `{text}` is not a JSONPath (RFC 9535): {e}"));
                None
            }
        }
    }

    fn template(&mut self, at: &str, text: &str) -> Vec<Part> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let Some(close) = rest[open..].find('}') else {
                self.problems.push(format!("{at}: `{text}` has an unclosed `{{`"));
                return parts;
            };
            if let Some((t, p)) = self.path(at, &rest[open + 1..open + close]) {
                parts.push(Part::Path(t, p));
            }
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        parts
    }

    fn field(&mut self, at: &str, v: &Value) -> Field {
        match v {
            Value::String(s) if s.starts_with('$') => match self.path(at, s) {
                Some((t, p)) => Field::Op(Box::new(Op::plain(Source::Path(t, p)))),
                None => Field::Const(Value::Null),
            },
            Value::Object(m) if OPS.iter().any(|k| m.contains_key(*k)) => self.op(at, m),
            Value::Object(m) => Field::Object(m.iter().map(|(k, v)| (k.clone(), self.field(&format!("{at}.{k}"), v))).collect()),
            other => Field::Const(other.clone()),
        }
    }

    fn op(&mut self, at: &str, m: &serde_json::Map<String, Value>) -> Field {
        let ops: Vec<&str> = OPS.iter().copied().filter(|k| m.contains_key(*k)).collect();
        if ops.len() > 1 {
            self.problems.push(format!("{at}: one of {} at a time, not {}", OPS.join(", "), ops.join(" and ")));
        }
        for k in m.keys() {
            if !OPS.contains(&k.as_str()) && !REFINEMENTS.contains(&k.as_str()) {
                self.problems.push(format!("{at}: unknown key `{k}`"));
            }
        }
        let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
        // A bad path is recorded and the refinements are still checked: every problem at once.
        let source = match ops.first().copied() {
            Some("path") => text("path").and_then(|t| self.path(at, &t)).map(|(t, p)| Source::Path(t, p)),
            Some("first_of") => {
                let texts: Option<Vec<&str>> = m["first_of"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect());
                match texts.filter(|t| t.len() >= 2 && Some(t.len()) == m["first_of"].as_array().map(Vec::len)) {
                    Some(texts) => {
                        let paths: Vec<_> = texts.iter().filter_map(|t| self.path(at, t)).collect();
                        (paths.len() == texts.len()).then_some(Source::FirstOf(paths))
                    }
                    None => {
                        self.problems.push(format!("{at}: `first_of` takes a list of two or more JSONPaths"));
                        None
                    }
                }
            }
            Some("template") => Some(Source::Template(self.template(at, &text("template").unwrap_or_default()))),
            Some("const") => return Field::Const(m["const"].clone()),
            Some("each") => {
                let path = text("each").and_then(|t| self.path(at, &t));
                let to = match m.get("to") {
                    Some(to) => Some(self.field(&format!("{at}[]"), to)),
                    None => {
                        self.problems.push(format!("{at}: `each` needs `to`"));
                        None
                    }
                };
                path.zip(to).map(|((t, p), to)| Source::Each(t, p, to))
            }
            _ => match m.get("uuid_from").and_then(Value::as_array) {
                Some(items) => Some(Source::UuidFrom(items.iter().map(|i| self.field(at, i)).collect())),
                None => {
                    self.problems.push(format!("{at}: `uuid_from` takes a list"));
                    None
                }
            },
        };
        let as_ = match text("as").as_deref() {
            None => As::String,
            Some("string") => As::String,
            Some("integer") => As::Integer,
            Some("decimal") => As::Decimal,
            Some("date") => As::Date,
            Some("datetime") => As::DateTime,
            Some("minor_units") => As::MinorUnits,
            Some("json") => As::Json,
            Some(other) => {
                self.problems.push(format!("{at}: unknown `as: {other}`"));
                As::String
            }
        };
        let as_ = if matches!(source, Some(Source::Each(..))) && text("as").is_none() { As::Json } else { as_ };
        let currency = m.get("currency").map(|c| self.field(&format!("{at}.currency"), c));
        if (as_ == As::MinorUnits) != currency.is_some() {
            self.problems.push(format!("{at}: `as: minor_units` goes with `currency`"));
        }
        let map = text("map");
        if let Some(name) = &map
            && !self.maps.contains_key(name)
        {
            self.problems.push(format!("{at}: no value map `{name}`"));
        }
        let case = match text("case").as_deref() {
            None => None,
            Some("lower") => Some(false),
            Some("upper") => Some(true),
            Some(other) => {
                self.problems.push(format!("{at}: `case` is lower or upper, not {other}"));
                None
            }
        };
        let scale = m.get("scale").and_then(Value::as_u64).and_then(|s| u32::try_from(s).ok());
        let mut exponents = BTreeMap::new();
        for (code, e) in m.get("exponents").and_then(Value::as_object).into_iter().flatten() {
            match e.as_u64().and_then(|e| u32::try_from(e).ok()).filter(|e| *e <= 4) {
                Some(e) => {
                    exponents.insert(code.to_ascii_uppercase(), e);
                }
                None => self.problems.push(format!("{at}: exponents.{code} must be 0 to 4")),
            }
        }
        let from_document = match text("from").as_deref() {
            None | Some("node") => false,
            Some("document") => true,
            Some(other) => {
                self.problems.push(format!("{at}: `from` is node or document, not {other}"));
                false
            }
        };
        let Some(source) = source else { return Field::Const(Value::Null) };
        Field::Op(Box::new(Op {
            source,
            as_,
            scale,
            currency,
            map,
            case,
            default: m.get("default").cloned(),
            optional: m.get("optional").and_then(Value::as_bool).unwrap_or(false),
            from_document,
            exponents,
        }))
    }
}

impl Op {
    /// A string field read from `source` with no options.
    pub(crate) fn plain(source: Source) -> Self {
        Self {
            source,
            as_: As::String,
            scale: None,
            currency: None,
            map: None,
            case: None,
            default: None,
            optional: false,
            from_document: false,
            exponents: BTreeMap::new(),
        }
    }
}

impl Mapping {
    /// Reads a mapping from YAML; `file` names it in errors.
    pub fn from_yaml(file: &str, text: &str) -> Result<Self, SpecError> {
        let fail = |p: String| SpecError { file: file.to_owned(), problems: vec![p] };
        let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| fail(format!("not YAML: {e}")))?;
        let Some(top) = doc.as_object() else { return Err(fail("not a mapping document".into())) };
        let mut problems = Vec::new();
        for k in top.keys() {
            if !["mapping", "version", "description", "format", "require", "emit", "maps", "redact", "xml_arrays"].contains(&k.as_str()) {
                problems.push(format!("unknown key `{k}`"));
            }
        }
        let name = top.get("mapping").and_then(Value::as_str).unwrap_or_default().to_owned();
        if name.is_empty() || !name.contains('/') {
            problems.push("`mapping` must name it as vendor/object".into());
        }
        let version = top.get("version").and_then(Value::as_u64).and_then(|v| u32::try_from(v).ok()).unwrap_or(0);
        if version == 0 {
            problems.push("`version` must be a whole number from 1".into());
        }
        let format = match top.get("format").and_then(Value::as_str) {
            None | Some("json") => Format::Json,
            Some("xml") => Format::Xml,
            Some(other) => {
                problems.push(format!("`format` is json or xml, not {other}"));
                Format::Json
            }
        };
        let mut maps = BTreeMap::new();
        for (k, v) in top.get("maps").and_then(Value::as_object).into_iter().flatten() {
            match v.as_object() {
                Some(m) => {
                    maps.insert(k.clone(), m.iter().map(|(a, b)| (a.clone(), b.clone())).collect());
                }
                None => problems.push(format!("maps.{k} is not a table")),
            }
        }
        let mut p = Parser { problems, maps: &maps };
        let mut require = Vec::new();
        for (i, g) in top.get("require").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let at = format!("require[{i}]");
            let Some(path) = g.get("path").and_then(Value::as_str).and_then(|t| p.path(&at, t)) else {
                p.problems.push(format!("{at}: needs a `path`"));
                continue;
            };
            require.push(Guard { path, equals: g.get("equals").cloned(), one_of: g.get("one_of").and_then(Value::as_array).cloned() });
        }
        let mut redact = Vec::new();
        for (i, r) in top.get("redact").and_then(Value::as_array).into_iter().flatten().enumerate() {
            if let Some(p) = r.as_str().and_then(|t| p.path(&format!("redact[{i}]"), t)) {
                redact.push(p);
            }
        }
        let emit = top.get("emit").and_then(Value::as_object);
        let source = emit.and_then(|e| e.get("source")).and_then(Value::as_str).unwrap_or_default().to_owned();
        let detail_type = emit.and_then(|e| e.get("detail_type")).and_then(Value::as_str).unwrap_or_default();
        let event_type = EventType::from_detail_type(detail_type);
        match event_type {
            None => p.problems.push(format!("emit.detail_type: `{detail_type}` is not an o2c event type")),
            Some(t) if t.source() != source => {
                p.problems.push(format!("emit.source: {detail_type} comes from `{}`, not `{source}`", t.source()));
            }
            Some(_) => {}
        }
        let each = emit.and_then(|e| e.get("each")).and_then(Value::as_str).and_then(|t| p.path("emit.each", t));
        let detail = match emit.and_then(|e| e.get("detail")) {
            Some(d) => p.field("detail", d),
            None => {
                p.problems.push("emit.detail is missing".into());
                Field::Const(Value::Null)
            }
        };
        if !p.problems.is_empty() {
            return Err(SpecError { file: file.to_owned(), problems: p.problems });
        }
        let event_type = event_type.ok_or_else(|| fail("no event type".into()))?;
        Ok(Self {
            name,
            version,
            description: top.get("description").and_then(Value::as_str).unwrap_or_default().to_owned(),
            format,
            require,
            emit: Emit { each, source, event_type, detail },
            maps,
            xml_arrays: top
                .get("xml_arrays")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default(),
            redact,
        })
    }
}
