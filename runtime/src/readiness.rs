use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

/// The daemon's readiness: ready only while every registered gate is ready.
///
/// Each watch owns a gate, so `/readyz` can say which cache is not synced or which
/// watch is failing. A readiness with no gates is ready.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    // Gate name to the reason it is not ready; `None` means ready.
    gates: Arc<Mutex<BTreeMap<String, Option<String>>>>,
}

impl Readiness {
    /// A readiness with no gates yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a gate that starts not ready with `reason`; a second gate of the same name
    /// shares its state.
    pub fn gate(&self, name: impl Into<String>, reason: impl Into<String>) -> Gate {
        let name = name.into();
        self.lock()
            .entry(name.clone())
            .or_insert_with(|| Some(reason.into()));
        Gate {
            name,
            readiness: self.clone(),
        }
    }

    /// `Ok` when ready, else the reasons of every gate that is not, in name order.
    pub fn status(&self) -> Result<(), String> {
        let reasons: Vec<String> = self
            .lock()
            .iter()
            .filter_map(|(name, reason)| reason.as_ref().map(|r| format!("{name}: {r}")))
            .collect();
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons.join("; "))
        }
    }

    /// Whether every gate is ready.
    pub fn is_ready(&self) -> bool {
        self.status().is_ok()
    }

    fn set(&self, name: &str, reason: Option<String>) {
        self.lock().insert(name.to_owned(), reason);
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Option<String>>> {
        // A panic elsewhere while holding the lock leaves the map consistent (single inserts).
        self.gates.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One condition of readiness, e.g. "the Services cache has synced".
#[derive(Debug, Clone)]
pub struct Gate {
    name: String,
    readiness: Readiness,
}

impl Gate {
    /// Marks this gate ready.
    pub fn mark_ready(&self) {
        self.readiness.set(&self.name, None);
    }

    /// Marks this gate not ready, with a short reason shown by `/readyz`.
    pub fn mark_not_ready(&self, reason: impl Into<String>) {
        self.readiness.set(&self.name, Some(reason.into()));
    }

    /// The gate's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_gates_is_ready() {
        assert_eq!(Readiness::new().status(), Ok(()));
    }

    #[test]
    fn new_gate_is_not_ready_until_marked() {
        let r = Readiness::new();
        let services = r.gate("services", "waiting for initial list");
        assert_eq!(
            r.status(),
            Err("services: waiting for initial list".to_owned())
        );
        services.mark_ready();
        assert!(r.is_ready());
    }

    #[test]
    fn every_gate_must_be_ready() {
        let r = Readiness::new();
        let nodes = r.gate("nodes", "waiting");
        let services = r.gate("services", "waiting");
        nodes.mark_ready();
        assert_eq!(r.status(), Err("services: waiting".to_owned()));
        services.mark_ready();
        assert!(r.is_ready());
        nodes.mark_not_ready("watch failing: connection refused");
        assert_eq!(
            r.status(),
            Err("nodes: watch failing: connection refused".to_owned())
        );
    }

    #[test]
    fn reasons_are_listed_in_name_order() {
        let r = Readiness::new();
        r.gate("services", "b");
        r.gate("endpointslices", "a");
        assert_eq!(r.status(), Err("endpointslices: a; services: b".to_owned()));
    }

    #[test]
    fn registering_a_gate_again_keeps_its_state() {
        let r = Readiness::new();
        r.gate("nodes", "waiting").mark_ready();
        let again = r.gate("nodes", "waiting");
        assert!(r.is_ready());
        assert_eq!(again.name(), "nodes");
    }

    #[test]
    fn clones_share_state() {
        let r = Readiness::new();
        let gate = r.gate("nodes", "waiting");
        let seen_by_server = r.clone();
        gate.mark_ready();
        assert!(seen_by_server.is_ready());
    }
}
