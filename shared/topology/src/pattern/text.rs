//! String operators: case-insensitive comparison and `wildcard` globs.

/// A string compared ignoring case the way event-ruler's `EqualsIgnoreCaseParser` does: each
/// pattern character matches its lower-case or its upper-case form (which may differ in length).
#[derive(Debug, Clone)]
pub(crate) struct CaseFold {
    chars: Vec<[String; 2]>,
}

impl CaseFold {
    pub(crate) fn new(pattern: &str) -> Self {
        Self { chars: pattern.chars().map(|c| [c.to_lowercase().collect(), c.to_uppercase().collect()]).collect() }
    }

    /// Byte offsets in `s` where a match of the whole pattern, read forwards from 0, can end.
    fn forward_ends(&self, s: &[u8]) -> Vec<usize> {
        let mut at = vec![0];
        for forms in &self.chars {
            let mut next = Vec::new();
            for &p in &at {
                for form in forms {
                    let end = p + form.len();
                    if s.get(p..end) == Some(form.as_bytes()) && !next.contains(&end) {
                        next.push(end);
                    }
                }
            }
            if next.is_empty() {
                return next;
            }
            at = next;
        }
        at
    }

    pub(crate) fn equals(&self, s: &str) -> bool {
        self.forward_ends(s.as_bytes()).contains(&s.len())
    }

    pub(crate) fn is_prefix_of(&self, s: &str) -> bool {
        !self.forward_ends(s.as_bytes()).is_empty()
    }

    pub(crate) fn is_suffix_of(&self, s: &str) -> bool {
        let s = s.as_bytes();
        let mut at = vec![s.len()];
        for forms in self.chars.iter().rev() {
            let mut next = Vec::new();
            for &p in &at {
                for form in forms {
                    if let Some(start) = p.checked_sub(form.len())
                        && s.get(start..p) == Some(form.as_bytes())
                        && !next.contains(&start)
                    {
                        next.push(start);
                    }
                }
            }
            if next.is_empty() {
                return false;
            }
            at = next;
        }
        true
    }
}

/// A `wildcard` value: literal runs separated by `*` (any run of characters, possibly empty).
#[derive(Debug, Clone)]
pub(crate) struct Glob {
    /// Literal runs; a `*` stands between each two.
    parts: Vec<String>,
}

impl Glob {
    /// Parses like event-ruler's `WildcardParser`: `\*` is a literal `*`, `\\` a literal `\`;
    /// any other escape and `**` are refused. Error positions count the opening quote event-ruler
    /// puts in front of the value (so they match EventBridge's messages).
    pub(crate) fn parse(pattern: &str) -> Result<Self, String> {
        let mut parts = vec![String::new()];
        let mut chars = pattern.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '*' => {
                    if chars.peek().is_some_and(|&(_, n)| n == '*') {
                        return Err(format!("Consecutive wildcard characters at pos {}", i + 1));
                    }
                    parts.push(String::new());
                }
                '\\' => match chars.next() {
                    Some((_, next @ ('*' | '\\'))) => push(&mut parts, next),
                    _ => return Err(format!("Invalid escape character at pos {}", i + 1)),
                },
                other => push(&mut parts, other),
            }
        }
        Ok(Self { parts })
    }

    /// The literal runs (a `*` stands between each two).
    pub(crate) fn parts(&self) -> &[String] {
        &self.parts
    }

    /// Linear in the value: leftmost placement of each middle run is optimal when `*` is the only
    /// wildcard, and `str::find` is linear (two-way search).
    pub(crate) fn matches(&self, s: &str) -> bool {
        let (first, rest) = match self.parts.split_first() {
            Some(split) => split,
            None => return s.is_empty(),
        };
        let Some((last, middle)) = rest.split_last() else { return s == first };
        if s.len() < first.len() + last.len() || !s.starts_with(first.as_str()) || !s.ends_with(last.as_str()) {
            return false;
        }
        let mut window = &s[first.len()..s.len() - last.len()];
        for part in middle {
            match window.find(part.as_str()) {
                Some(at) => window = &window[at + part.len()..],
                None => return false,
            }
        }
        true
    }
}

fn push(parts: &mut [String], c: char) {
    if let Some(last) = parts.last_mut() {
        last.push(c);
    }
}
