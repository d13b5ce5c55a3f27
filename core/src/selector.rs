//! A Kubernetes label selector as plain data: `matchLabels` and `matchExpressions`, with
//! Kubernetes matching semantics. Pools (allocation) and advertisements (announcing) use it.

use std::collections::{BTreeMap, BTreeSet};

/// One `matchExpressions` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Requirement {
    /// The label is present with one of the values (no values: matches nothing).
    In(String, BTreeSet<String>),
    /// The label is absent, or present with none of the values.
    NotIn(String, BTreeSet<String>),
    /// The label is present.
    Exists(String),
    /// The label is absent.
    DoesNotExist(String),
}

impl Requirement {
    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LabelSelector {
    /// Labels that must be present with exactly these values.
    pub match_labels: BTreeMap<String, String>,
    /// Requirements that must all hold.
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    /// Whether `labels` satisfy every term (an empty selector matches all).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// Parses the selector syntax of `kubectl -l`: comma-separated `key=value` (or `==`),
    /// `key!=value`, `key`, `!key`, `key in (a,b)`, `key notin (a,b)`. The empty string
    /// selects everything.
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut selector = LabelSelector::default();
        for term in split_terms(text)? {
            let term = term.trim();
            if term.is_empty() {
                if text.trim().is_empty() {
                    continue;
                }
                return Err(format!("{text:?}: an empty term"));
            }
            let bad = |why: &str| format!("{term:?} in {text:?}: {why}");
            let requirement = if let Some(key) = term.strip_prefix('!') {
                Requirement::DoesNotExist(label_key(key.trim()).map_err(|e| bad(&e))?)
            } else if let Some((key, op, values)) = set_term(term) {
                let key = label_key(key).map_err(|e| bad(&e))?;
                let values = values
                    .split(',')
                    .map(|v| match v.trim() {
                        "" => Err("an empty value in the set".to_owned()),
                        v => label_value(v),
                    })
                    .collect::<Result<BTreeSet<String>, String>>()
                    .map_err(|e| bad(&e))?;
                if op == "in" {
                    Requirement::In(key, values)
                } else {
                    Requirement::NotIn(key, values)
                }
            } else if let Some((key, value)) = term.split_once("!=") {
                let value = label_value(value.trim()).map_err(|e| bad(&e))?;
                Requirement::NotIn(
                    label_key(key.trim()).map_err(|e| bad(&e))?,
                    BTreeSet::from([value]),
                )
            } else if let Some((key, value)) =
                term.split_once("==").or_else(|| term.split_once('='))
            {
                let key = label_key(key.trim()).map_err(|e| bad(&e))?;
                let value = label_value(value.trim()).map_err(|e| bad(&e))?;
                selector.match_labels.insert(key, value);
                continue;
            } else {
                Requirement::Exists(label_key(term).map_err(|e| bad(&e))?)
            };
            selector.match_expressions.push(requirement);
        }
        Ok(selector)
    }
}

/// Splits at commas outside parentheses.
fn split_terms(text: &str) -> Result<Vec<&str>, String> {
    let (mut terms, mut depth, mut start) = (Vec::new(), 0u32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("{text:?}: unbalanced parenthesis"))?
            }
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("{text:?}: unbalanced parenthesis"));
    }
    terms.push(&text[start..]);
    Ok(terms)
}

/// `key in (values)` / `key notin (values)`: the key, the operator and the inside.
fn set_term(term: &str) -> Option<(&str, &str, &str)> {
    let open = term.find('(')?;
    let inside = term[open + 1..].strip_suffix(')')?;
    let mut words = term[..open].split_whitespace();
    let (key, op) = (words.next()?, words.next()?);
    (words.next().is_none() && (op == "in" || op == "notin")).then_some((key, op, inside))
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn label_key(key: &str) -> Result<String, String> {
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            let ok = !prefix.is_empty()
                && prefix.len() <= 253
                && prefix
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !ok {
                return Err(format!("{key:?} has a bad prefix"));
            }
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err("a label key cannot be empty".to_owned());
    }
    label_value(name).map(|_| key.to_owned())
}

/// A label value: empty, or at most 63 alphanumerics, `-`, `_`, `.`, starting and ending
/// alphanumeric.
fn label_value(value: &str) -> Result<String, String> {
    let ok_chars = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    let ok_ends = value.is_empty()
        || (value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()));
    if ok_chars && ok_ends && value.len() <= 63 {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "{value:?} is not a label name or value (at most 63 of a-z, 0-9, -, _, ., alphanumeric at both ends)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
    fn set(vs: &[&str]) -> BTreeSet<String> {
        vs.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn selector_table() {
        let zone_a = labels(&[("zone", "a"), ("role", "edge")]);
        let bare = labels(&[]);
        let cases: Vec<(LabelSelector, bool, bool)> = vec![
            (LabelSelector::default(), true, true),
            (
                LabelSelector {
                    match_labels: labels(&[("zone", "a")]),
                    ..Default::default()
                },
                true,
                false,
            ),
            (
                LabelSelector {
                    match_labels: labels(&[("zone", "b")]),
                    ..Default::default()
                },
                false,
                false,
            ),
            (
                sel(Requirement::In("zone".into(), set(&["a", "b"]))),
                true,
                false,
            ),
            (sel(Requirement::In("zone".into(), set(&[]))), false, false),
            (
                sel(Requirement::NotIn("zone".into(), set(&["a"]))),
                false,
                true,
            ),
            (
                sel(Requirement::NotIn("zone".into(), set(&["b"]))),
                true,
                true,
            ),
            (sel(Requirement::Exists("role".into())), true, false),
            (sel(Requirement::DoesNotExist("role".into())), false, true),
        ];
        for (i, (s, on_a, on_bare)) in cases.iter().enumerate() {
            assert_eq!(s.matches(&zone_a), *on_a, "case {i} on zone a");
            assert_eq!(s.matches(&bare), *on_bare, "case {i} on bare");
        }
        let both = LabelSelector {
            match_labels: labels(&[("zone", "a")]),
            match_expressions: vec![Requirement::DoesNotExist("role".into())],
        };
        assert!(!both.matches(&zone_a), "every term must hold");
    }

    #[test]
    fn parses_kubectl_selector_syntax() {
        let s = LabelSelector::parse(
            "zone=a, tier==web,role!=db,edge,!e2e.ferrolb.io/run,env in (prod, stage),team notin (x)",
        )
        .unwrap();
        assert_eq!(s.match_labels, labels(&[("zone", "a"), ("tier", "web")]));
        assert_eq!(
            s.match_expressions,
            vec![
                Requirement::NotIn("role".into(), set(&["db"])),
                Requirement::Exists("edge".into()),
                Requirement::DoesNotExist("e2e.ferrolb.io/run".into()),
                Requirement::In("env".into(), set(&["prod", "stage"])),
                Requirement::NotIn("team".into(), set(&["x"])),
            ]
        );
        assert_eq!(LabelSelector::parse("").unwrap(), LabelSelector::default());
        assert_eq!(
            LabelSelector::parse("  ").unwrap(),
            LabelSelector::default()
        );
        // An empty value is a value.
        assert_eq!(
            LabelSelector::parse("k=").unwrap().match_labels,
            labels(&[("k", "")])
        );
        let not_e2e = LabelSelector::parse("!e2e.ferrolb.io/release").unwrap();
        assert!(not_e2e.matches(&labels(&[("zone", "a")])));
        assert!(!not_e2e.matches(&labels(&[("e2e.ferrolb.io/release", "x")])));
    }

    #[test]
    fn refuses_bad_selectors_naming_the_term() {
        for bad in [
            "zone=a,,tier=b",
            "=a",
            "!",
            "zone in (a",
            "zone in a)",
            "zone=a b",
            "-zone=a",
            "zone=a-",
            "Bad_Prefix/k=v",
            "/k=v",
            "zone in (a,,b)",
            "zone between (a)",
            &format!("k={}", "v".repeat(64)),
        ] {
            let err = LabelSelector::parse(bad).expect_err(bad);
            assert!(!err.is_empty(), "{bad}");
        }
    }

    fn sel(r: Requirement) -> LabelSelector {
        LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![r],
        }
    }
}
