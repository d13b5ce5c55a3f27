//! `cargo xtask test`: the one command that builds and tests everything,
//! including the end-to-end tests against the real control plane.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::{chart, controlplane, lab, run};

/// Options of the test command.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Leave the control plane running afterwards (it is always left running if it already was).
    #[arg(long)]
    keep: bool,
    /// Only unit and property tests: no control plane, nothing that needs root.
    #[arg(long)]
    unit: bool,
    /// Passed to the test binaries (a name filter, `--nocapture`, ...).
    #[arg(last = true)]
    test_args: Vec<String>,
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Builds everything, starts the control plane unless `--unit`, and runs every test.
pub fn run(root: &Path, args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    // The end-to-end tests run the daemons' binaries, so build those as well as the tests.
    run::status(
        cargo()
            .current_dir(root)
            .args(["build", "--workspace", "--bins", "--tests"]),
    )?;
    eprintln!("built in {:.0?}", started.elapsed());

    let mut test = cargo();
    test.current_dir(root)
        .args(["test", "--workspace", "--no-fail-fast", "--"]);
    if args.unit {
        test.args(&args.test_args);
        return run::status(&mut test);
    }

    // As root the whole lab comes up (nodes, kubelets, client, router) with FerroLB installed
    // by its chart; without root only the control plane, and the tests that need the lab say so.
    let as_root = run::is_root();
    let cp = if as_root {
        lab::up(root, 3, lab::Build::Skip)?;
        controlplane::Started::Now
    } else {
        controlplane::up(root)?
    };
    test.arg("--include-ignored")
        .args(&args.test_args)
        .env("FERROLB_KUBECONFIG", controlplane::kubeconfig(root));
    // The end-to-end tests run against FerroLB as the chart installs it (its args,
    // ServiceAccounts and RBAC only), as `cargo xtask lab deploy` does.
    let installed = if as_root {
        chart::install(root, &[])
    } else {
        Ok(())
    };
    let result = installed.and_then(|()| run::status(&mut test));
    if cp == controlplane::Started::Now && !args.keep {
        let down = if as_root {
            lab::down(root)
        } else {
            controlplane::down(root)
        };
        if let Err(e) = down {
            eprintln!("taking the lab down: {e:#}");
        }
    }
    eprintln!("test command finished in {:.0?}", started.elapsed());
    result
}
