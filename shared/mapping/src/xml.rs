//! XML read as JSON, so the same JSONPath addresses an ISO 20022 message: an element is an
//! object keyed by its children's local names (namespaces dropped), a child that repeats is
//! an array, an element with only text is its text, attributes are `@name`, and text beside
//! children or attributes is `$text`. `$.Document.BkToCstmrDbtCdtNtfctn.Ntfctn.Ntry[*]`.

use quick_xml::Reader;
use quick_xml::events::Event;
use serde_json::{Map, Value};

/// Elements deeper than this are refused (a document is not a stack-exhaustion attack).
const MAX_DEPTH: usize = 64;

struct Node {
    name: String,
    fields: Map<String, Value>,
    text: String,
}

fn local(name: &[u8]) -> String {
    let s = String::from_utf8_lossy(name);
    s.rsplit(':').next().unwrap_or_default().to_owned()
}

fn insert(fields: &mut Map<String, Value>, k: String, v: Value, arrays: &[String]) {
    if arrays.contains(&k) && !fields.contains_key(&k) {
        fields.insert(k, Value::Array(vec![v]));
        return;
    }
    match fields.get_mut(&k) {
        Some(Value::Array(a)) => a.push(v),
        Some(prev) => {
            let first = prev.take();
            *prev = Value::Array(vec![first, v]);
        }
        None => {
            fields.insert(k, v);
        }
    }
}

fn finish(n: Node) -> Value {
    let text = n.text.trim().to_owned();
    if n.fields.is_empty() {
        return Value::String(text);
    }
    let mut fields = n.fields;
    if !text.is_empty() {
        fields.insert("$text".into(), Value::String(text));
    }
    Value::Object(fields)
}

fn start(e: &quick_xml::events::BytesStart<'_>) -> Result<Node, String> {
    let mut fields = Map::new();
    for a in e.attributes() {
        let a = a.map_err(|e| e.to_string())?;
        let key = local(a.key.as_ref());
        if key == "xmlns" || a.key.as_ref().starts_with(b"xmlns:") {
            continue;
        }
        let v = a.unescape_value().map_err(|e| e.to_string())?;
        fields.insert(format!("@{key}"), Value::String(v.into_owned()));
    }
    Ok(Node { name: local(e.name().as_ref()), fields, text: String::new() })
}

/// The document as JSON: `{"<root>": …}`.
pub fn to_json(bytes: &[u8]) -> Result<Value, String> {
    to_json_with(bytes, &[])
}

/// [`to_json`], with the elements named in `arrays` always read as arrays (a camt.054 with
/// one entry has one `Ntry`: still a list of one).
pub fn to_json_with(bytes: &[u8], arrays: &[String]) -> Result<Value, String> {
    let mut reader = Reader::from_reader(bytes);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Node> = Vec::new();
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf).map_err(|e| format!("at byte {}: {e}", reader.buffer_position()))? {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("nested deeper than {MAX_DEPTH} elements"));
                }
                stack.push(start(&e)?);
            }
            Event::Empty(e) => {
                let n = start(&e)?;
                let name = n.name.clone();
                let v = finish(n);
                match stack.last_mut() {
                    Some(parent) => insert(&mut parent.fields, name, v, arrays),
                    None => return Ok(Value::Object(Map::from_iter([(name, v)]))),
                }
            }
            Event::Text(t) => {
                if let Some(n) = stack.last_mut() {
                    n.text.push_str(&t.decode().map_err(|e| e.to_string())?);
                }
            }
            // `&amp;` and the like arrive on their own: the five predefined entities and
            // character references (a DTD's own entities are never expanded).
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(c) => c,
                    None => match r.decode().map_err(|e| e.to_string())?.as_ref() {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "apos" => '\'',
                        "quot" => '"',
                        other => return Err(format!("unknown entity &{other};")),
                    },
                };
                if let Some(n) = stack.last_mut() {
                    n.text.push(c);
                }
            }
            Event::CData(t) => {
                if let Some(n) = stack.last_mut() {
                    n.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::End(_) => {
                let n = stack.pop().ok_or("an end tag without its start")?;
                let name = n.name.clone();
                let v = finish(n);
                match stack.last_mut() {
                    Some(parent) => insert(&mut parent.fields, name, v, arrays),
                    None => return Ok(Value::Object(Map::from_iter([(name, v)]))),
                }
            }
            Event::Eof => return Err("the document ends before its root element closes".into()),
            // Declarations, comments, processing instructions, DOCTYPE (never expanded).
            _ => {}
        }
        buf.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn when_xml_has_namespaces_repeats_and_attributes_should_read_as_json_by_local_name() {
        let x = br#"<?xml version="1.0"?><Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.054.001.08"><N><Ntry><Amt Ccy="EUR">10.50</Amt></Ntry><Ntry><Amt Ccy="USD">2</Amt></Ntry><Id>X</Id></N></Document>"#;
        let v = to_json(x).unwrap();
        assert_eq!(v["Document"]["N"]["Ntry"][1]["Amt"]["@Ccy"], "USD");
        assert_eq!(v["Document"]["N"]["Ntry"][0]["Amt"]["$text"], "10.50");
        assert_eq!(v["Document"]["N"]["Id"], "X");
    }

    #[test]
    fn when_xml_is_broken_or_too_deep_should_say_so() {
        assert!(to_json(b"<a><b></a>").is_err());
        assert!(to_json(b"<a>").is_err());
        assert!(to_json("<a>".repeat(100).as_bytes()).unwrap_err().contains("deeper"));
    }
}
