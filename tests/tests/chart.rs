//! The Helm chart: `helm lint --strict` passes, the rendered manifests match the committed
//! ones in tests/chart_golden/, and the daemons accept every flag the chart gives them.
//!
//! helm is built from the Go module proxy by xtask (cached under ~/.cache/ferrolb; the first
//! build takes about 7 minutes). The binaries are not built here: run `cargo build --workspace
//! --bins` first (`cargo xtask test` does).

use std::process::Command;

#[test]
#[ignore = "needs helm, built by xtask: run cargo xtask test"]
fn chart_lints_strictly() {
    xtask(&["chart", "lint"]);
}

#[test]
#[ignore = "needs helm, built by xtask: run cargo xtask test"]
fn rendered_chart_matches_golden_files() {
    xtask(&["chart", "template"]);
}

#[test]
#[ignore = "needs the daemons' binaries: run cargo xtask test"]
fn daemons_accept_the_charts_flags() {
    let mut checked = 0;
    for golden in ["default.yaml", "lab.yaml"] {
        let path = ferrolb_tests::workspace_root()
            .join("tests/chart_golden")
            .join(golden);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        // helm separates documents with a bare `---` line.
        for doc in text.split("\n---\n") {
            let obj: serde_json::Value = serde_yaml_ng::from_str(doc).expect("a YAML document");
            let kind = obj["kind"].as_str().unwrap_or_default();
            if kind != "Deployment" && kind != "DaemonSet" {
                continue;
            }
            let containers = obj["spec"]["template"]["spec"]["containers"]
                .as_array()
                .expect("containers");
            for c in containers {
                let image = c["image"].as_str().expect("image");
                // The lab's kubelet runs `*/ferrolb-<component>:<tag>` as that binary.
                let program = image
                    .rsplit('/')
                    .next()
                    .and_then(|n| n.split([':', '@']).next())
                    .expect("an image name");
                let args: Vec<&str> = c["args"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                    .unwrap_or_default();
                // clap refuses an unknown flag or a bad value before it reaches --help.
                let out = Command::new(ferrolb_tests::workspace_binary(program))
                    .args(&args)
                    .arg("--help")
                    .output()
                    .expect("running the daemon");
                assert!(
                    out.status.success(),
                    "{golden}: {program} refuses the chart's args {args:?}:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                checked += 1;
            }
        }
    }
    assert_eq!(
        checked, 4,
        "controller and speaker, in each of the two renderings"
    );
}

/// Runs the xtask binary (built next to this test by `cargo build --workspace --bins`).
fn xtask(args: &[&str]) {
    let status = Command::new(ferrolb_tests::workspace_binary("xtask"))
        .args(args)
        .current_dir(ferrolb_tests::workspace_root())
        .status()
        .expect("running xtask");
    assert!(status.success(), "`cargo xtask {}` failed", args.join(" "));
}
