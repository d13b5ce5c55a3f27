//! The CRD YAML committed to the chart is exactly what the types generate.

use std::path::Path;

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ferrolb/crds");
    let files = ferrolb_api::rendered_crds().expect("CRDs render to YAML");
    let mut stale = Vec::new();
    for (name, yaml) in &files {
        let committed = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        if committed != *yaml {
            stale.push(name.clone());
        }
    }
    for entry in std::fs::read_dir(&dir).expect("charts/ferrolb/crds exists") {
        let name = entry
            .expect("readable dir entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.starts_with("ferrolb.io_") && !files.iter().any(|(f, _)| *f == name) {
            stale.push(format!("{name} (no longer generated)"));
        }
    }
    assert!(
        stale.is_empty(),
        "charts/ferrolb/crds is out of date with the ferrolb-api types: {stale:?}; \
         run `cargo xtask gen` and commit the result"
    );
}
