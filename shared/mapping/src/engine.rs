//! Applies a mapping to a vendor document: pure, total (every input ends as events or as
//! the list of every failing path), and exact (money never goes through a float it was
//! not already in: a JSON number is read from its shortest decimal form and refused when
//! that form has more than 15 significant digits, where `f64` stops being exact).

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use o2c_domain::money::Currency;
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use serde_json_path::JsonPath;

use crate::spec::{As, Field, Mapping, Op, Part, Source};

/// One reason a document cannot be mapped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MapIssue {
    /// The output field (`detail.payload.amount`), or `require[0]` for a guard.
    pub field: String,
    /// The input path read.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// One canonical event a document became.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Mapped {
    /// `source`.
    pub source: String,
    /// `detail-type`.
    pub detail_type: String,
    /// `detail`: the o2c envelope and payload.
    pub detail: Value,
}

/// UUID v5 namespace of mapped events (a fixed random UUID).
const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x4f0c_3e52_9b7d_4a61_8f0e_2d5c_7a19_b3e8);

struct Ctx<'a> {
    m: &'a Mapping,
    /// The whole document (`from: document`).
    root: &'a Value,
    issues: Vec<MapIssue>,
}

/// The nodes `each` iterates: what the path selects, or the items of the one array it
/// selects (`$.records` and `$.records[*]` alike).
fn nodes<'v>(p: &JsonPath, v: &'v Value) -> Vec<&'v Value> {
    let found = p.query(v).all();
    match found.as_slice() {
        [Value::Array(items)] => items.iter().collect(),
        _ => found,
    }
}

fn one<'v>(p: &JsonPath, v: &'v Value) -> Result<Option<&'v Value>, String> {
    let nodes = p.query(v).all();
    match nodes.len() {
        0 => Ok(None),
        1 => Ok(Some(nodes[0]).filter(|n| !n.is_null())),
        n => Err(format!("selects {n} values, not one")),
    }
}

/// A JSON number as an exact decimal, if its shortest form is exact.
fn number_decimal(n: &serde_json::Number) -> Result<Decimal, String> {
    if let Some(i) = n.as_i64() {
        return Ok(Decimal::from(i));
    }
    let text = n.to_string();
    let d = Decimal::from_str(&text).or_else(|_| Decimal::from_scientific(&text)).map_err(|e| format!("{text}: {e}"))?;
    let digits = d.mantissa().unsigned_abs().to_string().trim_end_matches('0').len();
    if digits > 15 {
        return Err(format!("{text} has more than 15 significant digits: send it as a string"));
    }
    Ok(d)
}

/// A decimal written plainly: an optional sign, digits, an optional point and digits — at
/// most 28 digits in all (no exponent, no `_`, nothing `Decimal` would round).
fn strict_decimal(s: &str) -> Result<Decimal, String> {
    let t = s.trim();
    let body = t.strip_prefix('-').unwrap_or(t);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let digits = int.len() + frac.len();
    let plain = !int.is_empty() && int.bytes().all(|b| b.is_ascii_digit()) && frac.bytes().all(|b| b.is_ascii_digit());
    if !plain || (body.contains('.') && frac.is_empty()) {
        return Err(format!("`{s}` is not a decimal (digits, an optional point and digits)"));
    }
    if digits > 28 {
        return Err(format!("`{s}` has more than 28 digits"));
    }
    Decimal::from_str(t).map_err(|e| format!("`{s}`: {e}"))
}

/// OData V2's JSON date, as SAP Gateway services write `Edm.DateTime` and
/// `Edm.DateTimeOffset` (`"\/Date(1700006400000)\/"`, read from JSON as `/Date(1700006400000)/`;
/// with an offset `/Date(1700006400000+0060)/`): whole milliseconds since the epoch in UTC.
/// The offset (minutes) only says where the value was entered — the milliseconds are
/// already UTC, so it never moves the instant. `None` when `s` is not of that form.
fn odata_v2_date(s: &str) -> Option<Result<DateTime<Utc>, String>> {
    let inner = s.trim().strip_prefix("/Date(")?.strip_suffix(")/")?;
    // The sign of the milliseconds is the first character; an offset starts at a later sign.
    let split = inner.char_indices().skip(1).find(|(_, c)| *c == '+' || *c == '-').map_or(inner.len(), |(i, _)| i);
    let (ms, offset) = inner.split_at(split);
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let ms_ok = digits(ms.strip_prefix('-').unwrap_or(ms));
    let offset_ok = offset.is_empty() || digits(&offset[1..]);
    if !ms_ok || !offset_ok {
        return Some(Err(format!("`{s}` is not an OData date (/Date(milliseconds)/ or /Date(milliseconds+minutes)/)")));
    }
    Some(ms.parse::<i64>().ok().and_then(DateTime::<Utc>::from_timestamp_millis).ok_or_else(|| format!("`{s}` is out of range")))
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn convert(op: &Op, v: &Value, currency: Option<&str>) -> Result<Value, String> {
    match op.as_ {
        As::Json => Ok(v.clone()),
        As::String => text_of(v).map(Value::String).ok_or_else(|| format!("{v} is not a text")),
        As::Integer => match v {
            Value::Number(n) if n.as_i64().is_some() => Ok(v.clone()),
            Value::String(s) => s.trim().parse::<i64>().map(Value::from).map_err(|_| format!("`{s}` is not a whole number")),
            other => Err(format!("{other} is not a whole number")),
        },
        As::Decimal => {
            let d = match v {
                Value::Number(n) => number_decimal(n)?,
                Value::String(s) => strict_decimal(s)?,
                other => return Err(format!("{other} is not a decimal")),
            };
            let d = match op.scale {
                None => d,
                Some(scale) => {
                    let mut n = if d.scale() > scale { d.normalize() } else { d };
                    if n.scale() > scale {
                        return Err(format!("{d} has more than {scale} decimals (amounts are never rounded by a mapping)"));
                    }
                    n.rescale(scale);
                    n
                }
            };
            Ok(Value::String(d.to_string()))
        }
        As::MinorUnits => {
            let minor = match v {
                Value::Number(n) => n.as_i64().ok_or_else(|| format!("{n} is not a whole number of minor units"))?,
                Value::String(s) => s.trim().parse::<i64>().map_err(|_| format!("`{s}` is not a whole number of minor units"))?,
                other => return Err(format!("{other} is not a whole number of minor units")),
            };
            let code = currency.ok_or("no currency")?.to_ascii_uppercase();
            let c = Currency::parse(&code).map_err(|e| format!("currency `{code}`: {e}"))?;
            // The vendor's count (Stripe: ISK and UGX in hundredths), written at the
            // currency's ISO 4217 exponent — refused if that would drop a non-zero digit.
            let vendor = op.exponents.get(&code).copied().unwrap_or(c.exponent());
            let mut d = Decimal::new(minor, vendor);
            if vendor > c.exponent() {
                let n = d.normalize();
                if n.scale() > c.exponent() {
                    return Err(format!("{d} {code} has more decimals than {code} has ({})", c.exponent()));
                }
                d = n;
            }
            d.rescale(c.exponent());
            Ok(Value::String(d.to_string()))
        }
        As::Date | As::DateTime => {
            let t = match v {
                Value::Number(n) => {
                    let secs = n.as_i64().ok_or_else(|| format!("{n} is not whole seconds since the epoch"))?;
                    DateTime::<Utc>::from_timestamp(secs, 0).ok_or_else(|| format!("{secs} is out of range"))?
                }
                Value::String(s) => match odata_v2_date(s) {
                    // SAP's OData V2 services (`/Date(1700006400000)/`).
                    Some(t) => t?,
                    None => match DateTime::parse_from_rfc3339(s.trim()) {
                        Ok(t) => t.with_timezone(&Utc),
                        // Salesforce writes `2026-11-20T09:30:00.000+0000`.
                        Err(_) => match DateTime::parse_from_str(s.trim(), "%Y-%m-%dT%H:%M:%S%.f%z") {
                            Ok(t) => t.with_timezone(&Utc),
                            Err(_) if op.as_ == As::Date => {
                                let d = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| format!("`{s}` is not a date"))?;
                                return Ok(Value::String(d.format("%Y-%m-%d").to_string()));
                            }
                            Err(_) => return Err(format!("`{s}` is not a timestamp")),
                        },
                    },
                },
                other => return Err(format!("{other} is not a time")),
            };
            Ok(Value::String(if op.as_ == As::Date {
                t.format("%Y-%m-%d").to_string()
            } else {
                t.to_rfc3339_opts(SecondsFormat::Secs, true)
            }))
        }
    }
}

impl Ctx<'_> {
    fn issue(&mut self, field: &str, path: &str, message: impl Into<String>) {
        self.issues.push(MapIssue { field: field.to_owned(), path: path.to_owned(), message: message.into() });
    }

    /// The field's value; `None` when it is left out (or failed: an issue was recorded).
    fn field(&mut self, at: &str, f: &Field, doc: &Value) -> Option<Value> {
        match f {
            Field::Const(v) => Some(v.clone()),
            Field::Object(fields) => {
                let mut out = Map::new();
                for (k, f) in fields {
                    if let Some(v) = self.field(&format!("{at}.{k}"), f, doc) {
                        out.insert(k.clone(), v);
                    }
                }
                Some(Value::Object(out))
            }
            Field::Op(op) => self.op(at, op, doc),
        }
    }

    fn op(&mut self, at: &str, op: &Op, doc: &Value) -> Option<Value> {
        let at_node = if op.from_document { self.root } else { doc };
        let (raw, path) = match &op.source {
            Source::Path(text, p) => match one(p, at_node) {
                Ok(v) => (v.cloned(), text.clone()),
                Err(e) => {
                    self.issue(at, text, e);
                    return None;
                }
            },
            Source::FirstOf(paths) => {
                let mut found = None;
                for (text, p) in paths {
                    match one(p, at_node) {
                        Ok(Some(v)) if !v.as_str().is_some_and(|s| s.trim().is_empty()) => {
                            found = Some((v.clone(), text.clone()));
                            break;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            self.issue(at, text, e);
                            return None;
                        }
                    }
                }
                match found {
                    Some((v, text)) => (Some(v), text),
                    None => (None, paths.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>().join(" | ")),
                }
            }
            Source::Template(parts) => {
                let mut out = String::new();
                for part in parts {
                    match part {
                        Part::Text(t) => out.push_str(t),
                        Part::Path(text, p) => match one(p, doc).map(|v| v.and_then(text_of)) {
                            Ok(Some(s)) => out.push_str(&s),
                            Ok(None) => {
                                self.issue(at, text, "missing (the template needs it)");
                                return None;
                            }
                            Err(e) => {
                                self.issue(at, text, e);
                                return None;
                            }
                        },
                    }
                }
                (Some(Value::String(out)), String::new())
            }
            Source::Each(text, p, to) => {
                let nodes = nodes(p, doc);
                let mut items = Vec::with_capacity(nodes.len());
                for (i, node) in nodes.into_iter().enumerate() {
                    if let Some(v) = self.field(&format!("{at}[{i}]"), to, node) {
                        items.push(v);
                    }
                }
                if items.is_empty() {
                    if op.optional || op.default.is_some() {
                        return op.default.clone();
                    }
                    self.issue(at, text, "selects nothing");
                    return None;
                }
                (Some(Value::Array(items)), text.clone())
            }
            Source::UuidFrom(fields) => {
                let mut key = Vec::new();
                for f in fields {
                    match self.field(at, f, doc) {
                        Some(v) => key.push(text_of(&v).unwrap_or_else(|| v.to_string())),
                        None => return None,
                    }
                }
                let id = uuid::Uuid::new_v5(&NAMESPACE, key.join("\u{1f}").as_bytes());
                (Some(Value::String(id.to_string())), String::new())
            }
        };
        let Some(mut v) = raw.filter(|v| !v.is_null()) else {
            if let Some(d) = &op.default {
                return Some(d.clone());
            }
            if !op.optional {
                self.issue(at, &path, "missing");
            }
            return None;
        };
        if let Some(name) = &op.map {
            let table = &self.m.maps[name];
            let key = text_of(&v).unwrap_or_default();
            match table.get(&key) {
                Some(mapped) => v = mapped.clone(),
                None => {
                    let known: Vec<&str> = table.keys().map(String::as_str).collect();
                    self.issue(at, &path, format!("`{key}` is not in the value map `{name}` ({})", known.join(", ")));
                    return None;
                }
            }
        }
        let currency = match &op.currency {
            Some(c) => match self.field(&format!("{at}.currency"), c, doc).as_ref().and_then(text_of) {
                Some(code) => Some(code),
                None => return None,
            },
            None => None,
        };
        match convert(op, &v, currency.as_deref()) {
            Ok(mut out) => {
                if let (Some(upper), Value::String(s)) = (op.case, &out) {
                    out = Value::String(if upper { s.to_uppercase() } else { s.to_lowercase() });
                }
                Some(out)
            }
            Err(e) => {
                self.issue(at, &path, e);
                None
            }
        }
    }
}

impl Mapping {
    /// The events `doc` becomes, or every reason it cannot (guards, fields, then the
    /// event's own JSON Schema, each with its path).
    pub fn apply(&self, doc: &Value) -> Result<Vec<Mapped>, Vec<MapIssue>> {
        let mut ctx = Ctx { m: self, root: doc, issues: Vec::new() };
        for (i, g) in self.require.iter().enumerate() {
            let at = format!("require[{i}]");
            match one(&g.path.1, doc) {
                Err(e) => ctx.issue(&at, &g.path.0, e),
                Ok(None) => ctx.issue(&at, &g.path.0, "missing"),
                Ok(Some(v)) => {
                    if let Some(want) = &g.equals
                        && v != want
                    {
                        ctx.issue(&at, &g.path.0, format!("is {v}, the mapping takes only {want}"));
                    }
                    if let Some(any) = &g.one_of
                        && !any.contains(v)
                    {
                        ctx.issue(&at, &g.path.0, format!("is {v}, the mapping takes only one of {}", Value::Array(any.clone())));
                    }
                }
            }
        }
        if !ctx.issues.is_empty() {
            return Err(ctx.issues);
        }
        let roots: Vec<&Value> = match &self.emit.each {
            Some((text, p)) => {
                let nodes = nodes(p, doc);
                if nodes.is_empty() {
                    ctx.issue("emit.each", text, "selects nothing: no event to make");
                }
                nodes
            }
            None => vec![doc],
        };
        let mut out = Vec::new();
        for (i, root) in roots.into_iter().enumerate() {
            let at = if self.emit.each.is_some() { format!("[{i}].detail") } else { "detail".to_owned() };
            let before = ctx.issues.len();
            let Some(detail) = ctx.field(&at, &self.emit.detail, root) else { continue };
            if ctx.issues.len() > before {
                continue;
            }
            match o2c_app::contracts::violations(self.emit.event_type, &detail) {
                Ok(v) => {
                    for issue in v {
                        ctx.issue(&format!("{at}.{}", issue.field), "", format!("{} ({})", issue.message, issue.code));
                    }
                }
                Err(e) => ctx.issue(&at, "", e.to_string()),
            }
            out.push(Mapped { source: self.emit.source.clone(), detail_type: self.emit.event_type.detail_type().to_owned(), detail });
        }
        if ctx.issues.is_empty() { Ok(out) } else { Err(ctx.issues) }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    fn op(as_: As) -> Op {
        let path = "$.d".to_owned();
        let p = JsonPath::parse(&path).unwrap();
        Op { as_, ..Op::plain(Source::Path(path, p)) }
    }

    #[test]
    fn when_an_odata_v2_date_is_read_should_give_the_utc_instant_of_its_milliseconds() {
        let (date, time) = (op(As::Date), op(As::DateTime));
        // SAP's BillingDocumentDate: midnight UTC of the date.
        assert_eq!(convert(&date, &json!("/Date(1700006400000)/"), None).unwrap(), json!("2023-11-15"));
        assert_eq!(convert(&time, &json!("/Date(1700006400000)/"), None).unwrap(), json!("2023-11-15T00:00:00Z"));
        // An Edm.DateTimeOffset's offset says where it was entered; the instant is the same.
        assert_eq!(convert(&time, &json!("/Date(1700006400000+0060)/"), None).unwrap(), json!("2023-11-15T00:00:00Z"));
        assert_eq!(convert(&time, &json!("/Date(1700006400000-0300)/"), None).unwrap(), json!("2023-11-15T00:00:00Z"));
        // Before the epoch; a time of day keeps its UTC date.
        assert_eq!(convert(&date, &json!("/Date(-86400000)/"), None).unwrap(), json!("1969-12-31"));
        assert_eq!(convert(&date, &json!("/Date(1700089199000)/"), None).unwrap(), json!("2023-11-15"));
        // Malformed or out of range: refused with the value, never guessed.
        for bad in ["/Date()/", "/Date(17x)/", "/Date(1700006400000+)/", "/Date(+1700006400000)/", "/Date(1.5)/"] {
            let e = convert(&date, &json!(bad), None).unwrap_err();
            assert!(e.contains("not an OData date") && e.contains(bad), "{bad}: {e}");
        }
        assert!(convert(&time, &json!("/Date(99999999999999999)/"), None).unwrap_err().contains("out of range"));
        // Other forms are read as before.
        assert_eq!(odata_v2_date("2026-11-20"), None);
        assert_eq!(convert(&date, &json!("2026-11-20"), None).unwrap(), json!("2026-11-20"));
    }

    #[test]
    fn when_first_of_is_not_a_list_of_paths_should_refuse_to_load_the_mapping() {
        let yaml = "mapping: v/o\nversion: 1\nemit:\n  source: o2c.erp\n  detail_type: ErpInvoicePosted\n  detail:\n    n: {first_of: X}\n";
        for bad in ["[$.a]", "$.a", "[$.a, 3]", "[$.a, '$.[']"] {
            let e = crate::Mapping::from_yaml("v/o.yaml", &yaml.replace('X', bad)).unwrap_err();
            assert!(e.problems.iter().any(|p| p.contains("first_of") || p.contains("not a JSONPath")), "{bad}: {e}");
        }
    }
}
