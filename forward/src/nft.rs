//! The nftables adapter: applies plans as atomic `nft -f -` transactions.

use crate::ForwardError;
use ferrolb_core::forward::nft::{
    NftConfig, delta_transaction, full_transaction, remove_transaction,
};
use ferrolb_core::forward::{ForwardingPlan, Slots, diff};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// How a plan reached the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyKind {
    /// The table was replaced whole (first apply, or recovery after a failed one).
    Full,
    /// Only the changed Services' objects were touched.
    Incremental,
    /// Nothing differed from what was last applied; no transaction ran.
    Unchanged,
}

/// What one [`NftForwarder::apply`] did.
#[derive(Debug, Clone)]
pub struct ApplyReport {
    /// Full, incremental or nothing.
    pub kind: ApplyKind,
    /// Services whose rules changed.
    pub services_changed: usize,
    /// The transaction sent to `nft` (empty when unchanged).
    pub script: String,
    /// Time from rendering to `nft` exiting.
    pub elapsed: Duration,
}

/// Keeps FerroLB's nftables table equal to the latest plan.
#[derive(Debug)]
pub struct NftForwarder {
    config: NftConfig,
    argv: Vec<String>,
    applied: Option<(ForwardingPlan, Slots)>,
}

impl NftForwarder {
    /// A forwarder owning table `inet <table>`, using `nft` from `PATH`.
    pub fn new(table: impl Into<String>) -> Self {
        Self {
            config: NftConfig::with_table(table),
            argv: vec!["nft".into()],
            applied: None,
        }
    }

    /// Uses these rendering settings (the table name included).
    pub fn with_config(mut self, config: NftConfig) -> Self {
        self.config = config;
        self
    }

    /// Runs `nft` through this command instead (e.g. `ip netns exec <ns> nft`).
    pub fn with_command(mut self, argv: Vec<String>) -> Self {
        self.argv = argv;
        self
    }

    /// The rendering settings.
    pub fn config(&self) -> &NftConfig {
        &self.config
    }

    /// Makes the kernel forward exactly `plan`, in one atomic transaction.
    ///
    /// The first call replaces whatever a previous run left in the table; later calls only touch
    /// the Services that changed. After a failed call the next one replaces the table whole.
    pub fn apply(&mut self, plan: &ForwardingPlan) -> Result<ApplyReport, ForwardError> {
        let start = Instant::now();
        // On failure `applied` stays None, so the next call replaces the table whole.
        let (kind, services_changed, script, slots) = match self.applied.take() {
            None => {
                let (script, slots) = full_transaction(&self.config, plan);
                (ApplyKind::Full, plan.services.len(), script, slots)
            }
            Some((old, mut slots)) => {
                let changes = diff(&old, plan);
                if changes.is_empty() {
                    self.applied = Some((old, slots));
                    return Ok(ApplyReport {
                        kind: ApplyKind::Unchanged,
                        services_changed: 0,
                        script: String::new(),
                        elapsed: start.elapsed(),
                    });
                }
                let script = delta_transaction(&self.config, &old, &mut slots, &changes);
                (ApplyKind::Incremental, changes.len(), script, slots)
            }
        };
        if let Err(e) = self.run(&["-f", "-"], &script) {
            // The transaction was atomic, but resync whole next time rather than trust our memory.
            warn!(table = %self.config.table, error = %e, ?kind, "nft transaction failed");
            return Err(e);
        }
        self.applied = Some((plan.clone(), slots));
        let elapsed = start.elapsed();
        info!(table = %self.config.table, ?kind, services_changed, ?elapsed, "forwarding rules applied");
        Ok(ApplyReport {
            kind,
            services_changed,
            script,
            elapsed,
        })
    }

    /// Removes the table (clean stop); succeeds if it is already gone.
    pub fn remove(&mut self) -> Result<(), ForwardError> {
        self.run(&["-f", "-"], &remove_transaction(&self.config))?;
        self.applied = None;
        info!(table = %self.config.table, "forwarding table removed");
        Ok(())
    }

    /// The table as the kernel holds it (`nft -a list table`), for diagnostics and tests.
    pub fn list(&self) -> Result<String, ForwardError> {
        let table = self.config.table.clone();
        self.run(&["-a", "list", "table", "inet", &table], "")
    }

    fn run(&self, args: &[&str], stdin: &str) -> Result<String, ForwardError> {
        let (program, prefix) = self.argv.split_first().expect("nft command is never empty");
        debug!(%program, ?args, bytes = stdin.len(), "running nft");
        let mut child = Command::new(program)
            .args(prefix)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ForwardError::Spawn {
                program: program.clone(),
                source,
            })?;
        if let Some(mut input) = child.stdin.take() {
            // A write error means nft exited early; its status and stderr say why.
            let _ = input.write_all(stdin.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|source| ForwardError::Spawn {
                program: program.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(ForwardError::Nft {
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
