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

    fn sel(r: Requirement) -> LabelSelector {
        LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![r],
        }
    }
}
