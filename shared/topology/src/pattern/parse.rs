//! Pattern compiler: event-ruler's `JsonRuleCompiler` (validation, `$or` expansion into
//! combinations, flattened field paths), with its error reasons.

use serde_json::{Map, Value};

use super::PatternError;
use super::cidr::{IpRange, parse_ip};
use super::matcher::{AnythingBut, Branch, Field, Matcher, Num, NumRange, ValueMatcher};
use super::text::{CaseFold, Glob};

/// EventBridge refuses a pattern whose `$or`s make more combinations (user guide, `$or` note).
const MAX_COMBINATIONS: usize = 1000;
/// event-ruler's `GenericMachine.MAXIMUM_RULE_SIZE`: fields in one combination.
const MAX_FIELDS: usize = 256;
/// event-ruler's `Constants.RESERVED_FIELD_NAMES_IN_OR_RELATIONSHIP`: not field names inside `$or`.
const RESERVED_IN_OR: [&str; 24] = [
    "exactly",
    "equals-ignore-case",
    "prefix",
    "suffix",
    "anything-but",
    "exists",
    "wildcard",
    "numeric",
    "cidr",
    "=",
    "<",
    "<=",
    ">",
    ">=",
    "regex",
    "not-wildcard",
    "not-equals-ignore-case",
    "date-after",
    "date-on-or-after",
    "date-before",
    "date-on-or-before",
    "in-date-range",
    "ip-address-in-range",
    "ip-address-not-in-range",
];

/// One combination under construction: (flattened path, display path, index of its field).
type Rule = Vec<(String, String, usize)>;

/// Where the compiler is: field steps (joined with `.` into paths) and the path shown in errors.
#[derive(Default)]
struct At {
    steps: Vec<String>,
    shown: Vec<String>,
}

impl At {
    fn field(&self, key: &str) -> (String, String) {
        let join = |parts: &[String]| parts.iter().map(String::as_str).chain([key]).collect::<Vec<_>>().join(".");
        (join(&self.steps), join(&self.shown))
    }

    fn here(&self) -> String {
        if self.shown.is_empty() { "pattern".to_owned() } else { self.shown.join(".") }
    }

    fn error(&self, reason: impl Into<String>) -> PatternError {
        PatternError::Invalid { path: self.here(), reason: reason.into() }
    }
}

fn invalid(path: &str, reason: impl Into<String>) -> PatternError {
    PatternError::Invalid { path: path.to_owned(), reason: reason.into() }
}

/// Compiles a pattern into its fields (each written once in the pattern, shared by the `$or`
/// combinations that contain it) and its combinations.
pub(crate) fn compile(pattern: &Value) -> Result<(Vec<Field>, Vec<Branch>), PatternError> {
    let mut at = At::default();
    let Value::Object(map) = pattern else { return Err(at.error("Filter is not an object")) };
    let mut rules = Vec::new();
    let mut fields = Vec::new();
    object(&mut rules, &mut fields, &mut at, map, false)?;
    let branches = rules
        .into_iter()
        .map(|rule| {
            if rule.len() > MAX_FIELDS {
                return Err(at.error(format!("Size of rule exceeds max value of {MAX_FIELDS} fields")));
            }
            let mut ids: Vec<usize> = rule.into_iter().map(|(_, _, id)| id).collect();
            ids.sort_by(|&a, &b| fields[a].path.encode_utf16().cmp(fields[b].path.encode_utf16()));
            Ok(Branch { fields: ids })
        })
        .collect::<Result<_, _>>()?;
    Ok((fields, branches))
}

fn object(rules: &mut Vec<Rule>, fields: &mut Vec<Field>, at: &mut At, map: &Map<String, Value>, in_or: bool) -> Result<(), PatternError> {
    if map.is_empty() {
        return Err(at.error("Empty objects are not allowed"));
    }
    for (key, value) in map {
        if key == "$or" {
            or(rules, fields, at, value)?;
            continue;
        }
        let (path, shown) = at.field(key);
        if in_or && RESERVED_IN_OR.contains(&key.as_str()) {
            return Err(invalid(&shown, format!("{key} is Ruler reserved fieldName which cannot be used inside $or.")));
        }
        match value {
            Value::Object(inner) => {
                at.steps.push(key.clone());
                at.shown.push(key.clone());
                object(rules, fields, at, inner, in_or)?;
                at.steps.pop();
                at.shown.pop();
            }
            Value::Array(items) => {
                let matchers = values(items).map_err(|reason| invalid(&shown, reason))?;
                let id = fields.len();
                fields.push(Field::new(path.clone(), matchers));
                if rules.is_empty() {
                    rules.push(Rule::new());
                }
                for rule in rules.iter_mut() {
                    if rule.iter().any(|(p, _, _)| *p == path) {
                        return Err(invalid(
                            &shown,
                            format!(
                                "path `{path}` is given more than once in one pattern (EventBridge keeps the last one in \
                                 document order, which is not kept here)"
                            ),
                        ));
                    }
                    rule.push((path.clone(), shown.clone(), id));
                }
            }
            _ => return Err(invalid(&shown, format!("\"{key}\" must be an object or an array"))),
        }
    }
    Ok(())
}

fn or(rules: &mut Vec<Rule>, fields: &mut Vec<Field>, at: &mut At, value: &Value) -> Result<(), PatternError> {
    at.shown.push("$or".to_owned());
    let Value::Array(items) = value else { return Err(at.error("It must be an Array followed with $or.")) };
    at.shown.pop();
    let before = std::mem::take(rules);
    for (i, item) in items.iter().enumerate() {
        at.shown.push(format!("$or[{i}]"));
        let Value::Object(map) = item else { return Err(at.error("Only JSON object is allowed in array of $or relationship.")) };
        let mut branch = if before.is_empty() { vec![Rule::new()] } else { before.clone() };
        object(&mut branch, fields, at, map, true)?;
        at.shown.pop();
        rules.extend(branch);
        if rules.len() > MAX_COMBINATIONS {
            return Err(at.error(format!("$or makes more than {MAX_COMBINATIONS} rule combinations")));
        }
    }
    if items.len() < 2 {
        at.shown.push("$or".to_owned());
        return Err(at.error("There must have at least 2 Objects in $or relationship."));
    }
    Ok(())
}

/// The values listed for one field.
fn values(items: &[Value]) -> Result<Vec<Matcher>, String> {
    if items.is_empty() {
        return Err("Empty arrays are not allowed".into());
    }
    items.iter().map(value).collect()
}

/// One listed value: an operator expression, or an exact value.
fn value(item: &Value) -> Result<Matcher, String> {
    let exact = |m: ValueMatcher| Ok(Matcher::Value(m));
    match item {
        Value::Object(expression) => match_expression(expression),
        Value::Array(_) => Err("Match value must be String, number, true, false, or null".into()),
        // event-ruler turns an IP literal into a one-address range (`CIDR.ipToRangeIfPossible`).
        Value::String(s) => exact(match parse_ip(s) {
            Some(ip) => ValueMatcher::Ip(IpRange::single(ip)),
            None => ValueMatcher::String(s.clone()),
        }),
        Value::Number(n) => exact(ValueMatcher::Number(Num::of(n))),
        Value::Bool(b) => exact(ValueMatcher::Bool(*b)),
        Value::Null => exact(ValueMatcher::Null),
    }
}

/// `{ "<operator>": <operand> }` in a value list.
fn match_expression(expression: &Map<String, Value>) -> Result<Matcher, String> {
    let Some((name, operand)) = expression.iter().next() else { return Err("Match expression name not found".into()) };
    if expression.len() > 1 {
        return Err("Only one key allowed in match expression".into());
    }
    let string = |what: &str| operand.as_str().ok_or_else(|| format!("{what} match pattern must be a string"));
    let matcher = match name.as_str() {
        "exactly" => ValueMatcher::String(string("exact")?.to_owned()),
        "prefix" => match operand {
            Value::Object(inner) => ValueMatcher::PrefixIgnoreCase(ignore_case_operand(inner, "Prefix", "prefix")?),
            _ => ValueMatcher::Prefix(string("prefix")?.to_owned()),
        },
        "suffix" => match operand {
            Value::Object(inner) => ValueMatcher::SuffixIgnoreCase(ignore_case_operand(inner, "Suffix", "suffix")?),
            _ => ValueMatcher::Suffix(string("suffix")?.to_owned()),
        },
        "equals-ignore-case" => ValueMatcher::EqualsIgnoreCase(CaseFold::new(string("equals-ignore-case")?)),
        "wildcard" => ValueMatcher::Wildcard(Glob::parse(string("wildcard")?)?),
        // event-ruler's message for a non-string CIDR says "prefix" (EventBridge answers the same).
        "cidr" => ValueMatcher::Cidr(IpRange::parse(string("prefix")?)?),
        "numeric" => match operand {
            Value::Array(items) => ValueMatcher::Numeric(numeric(items)?),
            _ => return Err("Value of numeric must be an array.".into()),
        },
        "anything-but" => ValueMatcher::AnythingBut(anything_but(operand)?),
        "exists" => match operand {
            Value::Bool(true) => ValueMatcher::Exists,
            Value::Bool(false) => return Ok(Matcher::Absent),
            _ => return Err("exists match pattern must be either true or false.".into()),
        },
        other => return Err(format!("Unrecognized match type {other}")),
    };
    Ok(Matcher::Value(matcher))
}

/// `{"equals-ignore-case": "x"}` inside `prefix` / `suffix`.
fn ignore_case_operand(inner: &Map<String, Value>, kind: &str, name: &str) -> Result<CaseFold, String> {
    let Some((first, _)) = inner.iter().next() else { return Err(format!("{kind} expression name not found")) };
    let Some(value) = inner.get("equals-ignore-case") else { return Err(format!("Unsupported {name} pattern: {first}")) };
    let Some(text) = value.as_str() else { return Err("equals-ignore-case match pattern must be a string".into()) };
    if inner.len() > 1 {
        return Err("Only one key allowed in match expression".into());
    }
    Ok(CaseFold::new(text))
}

/// The token event-ruler's streaming parser names in a numeric-expression error: a string's
/// text, another JSON value as written, or `]` when the list ended early (the parser reports the
/// closing bracket it met where an operator or bound was expected).
fn token_in_message(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "]".to_owned(),
    }
}

/// A number usable in `numeric` / `anything-but` (event-ruler's `ComparableNumber.generate`).
fn comparable(n: &serde_json::Number) -> Result<f64, String> {
    Num::of(n).comparable.ok_or_else(|| format!("Cannot compare number : {n}"))
}

fn bound(value: Option<&Value>, operator: &str) -> Result<f64, String> {
    match value {
        Some(Value::Number(n)) => comparable(n),
        _ => Err(format!("Value of {operator} must be numeric")),
    }
}

/// `[op, n]` or `[">"|">=", low, "<"|"<=", high]`.
fn numeric(items: &[Value]) -> Result<NumRange, String> {
    let Some(Value::String(operator)) = items.first() else {
        return Err(format!("Invalid member in numeric match: {}", token_in_message(items.first())));
    };
    let too_many = || Err("Too many elements in numeric expression".to_owned());
    let one_sided = |value: f64, low: bool, open: bool| {
        if items.len() > 2 {
            return too_many();
        }
        // event-ruler's range machine runs off the end of its 10-byte encoding (an
        // ArrayIndexOutOfBoundsException) for a range open towards the end of the double line.
        if value == if low { f64::MAX } else { f64::MIN } {
            return Err(format!("Cannot compare number : {value:e} (event-ruler cannot build a range beyond it)"));
        }
        let bound = Some((value, open));
        Ok(if low { NumRange::Between { low: bound, high: None } } else { NumRange::Between { low: None, high: bound } })
    };
    match operator.as_str() {
        "=" => {
            let value = bound(items.get(1), "equals")?;
            if items.len() > 2 { too_many() } else { Ok(NumRange::Equal(value)) }
        }
        op @ (">" | ">=") => {
            let low = bound(items.get(1), op)?;
            if items.len() == 2 {
                return one_sided(low, true, op == ">");
            }
            let Some(Value::String(top_op)) = items.get(2) else {
                return Err(format!("Bad value in numeric range: {}", token_in_message(items.get(2))));
            };
            if top_op != "<" && top_op != "<=" {
                return Err(format!("Bad numeric range operator: {top_op}"));
            }
            let high = bound(items.get(3), top_op)?;
            if items.len() > 4 {
                return Err("Too many terms in numeric range expression".into());
            }
            if low >= high {
                return Err("Bottom must be less than top".into());
            }
            Ok(NumRange::Between { low: Some((low, op == ">")), high: Some((high, top_op == "<")) })
        }
        op @ ("<" | "<=") => one_sided(bound(items.get(1), op)?, false, op == "<"),
        other => Err(format!("Unrecognized numeric range operator: {other}")),
    }
}

fn anything_but(operand: &Value) -> Result<AnythingBut, String> {
    const OPERAND: &str = "Value of anything-but must be an array or single string/number value.";
    let Value::Object(inner) = operand else {
        return match operand {
            Value::Array(items) => anything_but_list(items),
            Value::String(s) => Ok(AnythingBut::Strings([s.clone()].into())),
            Value::Number(n) => Ok(AnythingBut::Numbers(vec![comparable(n)?])),
            _ => Err(OPERAND.into()),
        };
    };
    let Some((first, value)) = inner.iter().next() else { return Err("Anything-But expression name not found".into()) };
    // event-ruler reads the first key, its operand, then expects the end of the object; the key
    // order is lost here, so a second key is refused first, whatever the keys are.
    if inner.len() > 1 {
        return Err("Too many elements in numeric expression".into());
    }
    if !["equals-ignore-case", "prefix", "suffix", "wildcard"].contains(&first.as_str()) {
        return Err(format!("Unsupported anything-but pattern: {first}"));
    }
    let kind = first.as_str();
    let type_error = match kind {
        "equals-ignore-case" => "Inside anything-but/equals-ignore-case list, number|start|null|boolean is not supported.",
        "wildcard" => "wildcard match pattern must be a string",
        _ => "prefix/suffix match pattern must be a string",
    };
    let strings: Vec<&str> = match value {
        Value::Array(items) => items.iter().map(|v| v.as_str().ok_or(type_error)).collect::<Result<_, _>>()?,
        Value::String(s) => vec![s.as_str()],
        Value::Number(_) => return Err(type_error.into()),
        _ => return Err(OPERAND.into()),
    };
    if strings.is_empty() {
        // event-ruler accepts an empty list here, then fails with a NullPointerException when it
        // adds the rule to its machine.
        return Err(format!("Empty arrays are not allowed (anything-but/{kind})"));
    }
    if matches!(kind, "prefix" | "suffix") && strings.iter().any(|s| s.is_empty()) {
        return Err("Null prefix/suffix not allowed".into());
    }
    let owned = || strings.iter().map(|s| (*s).to_owned()).collect();
    Ok(match kind {
        "equals-ignore-case" => AnythingBut::IgnoreCase(strings.iter().map(|s| CaseFold::new(s)).collect()),
        "wildcard" => AnythingBut::Wildcards(strings.iter().map(|s| Glob::parse(s)).collect::<Result<_, _>>()?),
        "prefix" => AnythingBut::Prefixes(owned()),
        _ => AnythingBut::Suffixes(owned()),
    })
}

/// `{"anything-but": [..]}`: all strings or all numbers.
fn anything_but_list(items: &[Value]) -> Result<AnythingBut, String> {
    let (mut strings, mut numbers) = (Vec::new(), Vec::new());
    for item in items {
        match item {
            Value::String(s) => strings.push(s.clone()),
            Value::Number(n) => numbers.push(comparable(n)?),
            _ => return Err("Inside anything but list, start|null|boolean is not supported.".into()),
        }
    }
    match (strings.is_empty(), numbers.is_empty()) {
        (false, true) => Ok(AnythingBut::Strings(strings.into_iter().collect())),
        (true, false) => Ok(AnythingBut::Numbers(numbers)),
        _ => Err("Inside anything but list, either all values are number or string, mixed type is not supported".into()),
    }
}
