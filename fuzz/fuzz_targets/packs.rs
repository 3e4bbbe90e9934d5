//! What the pack targets share: the packs a fuzzed pack is loaded against,
//! so that its rules can use installed actions as real packs do.

use ultron8_pack::{Pack, PackFiles, load};

/// The reference packs `core` and `linux` as installed, built from the
/// files in `packs/`.
pub fn installed() -> Vec<Pack> {
    let core: PackFiles = [
        (
            "pack.yaml",
            &include_bytes!("../../packs/core/pack.yaml")[..],
        ),
        (
            "actions/http.yaml",
            &include_bytes!("../../packs/core/actions/http.yaml")[..],
        ),
        (
            "actions/noop.yaml",
            &include_bytes!("../../packs/core/actions/noop.yaml")[..],
        ),
        (
            "actions/shell.yaml",
            &include_bytes!("../../packs/core/actions/shell.yaml")[..],
        ),
    ]
    .into_iter()
    .map(|(path, bytes)| (path.to_string(), bytes.to_vec()))
    .collect();
    let core = load(&core, &ultron8_pack::NothingInstalled).expect("packs/core loads");
    vec![core]
}
