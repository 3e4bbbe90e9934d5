//! A pack as a `.tar.gz`, as `ultronctl pack install` sends it and the
//! hive reads it. An input that is not gzip (most of them, once mutated) is
//! taken as the tar inside and compressed first, so that mutations reach
//! the archive reader and the loader rather than stopping at a checksum.
#![no_main]

use std::io::Write;
use std::sync::LazyLock;

use flate2::Compression;
use flate2::write::GzEncoder;
use libfuzzer_sys::fuzz_target;
use ultron8_pack::{Pack, load, read_tarball};

mod packs;

static INSTALLED: LazyLock<Vec<Pack>> = LazyLock::new(packs::installed);

fuzz_target!(|data: &[u8]| {
    let gzipped;
    let archive = if data.starts_with(&[0x1f, 0x8b]) {
        data
    } else {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(data).expect("compress in memory");
        gzipped = encoder.finish().expect("compress in memory");
        &gzipped[..]
    };
    let Ok(files) = read_tarball(archive) else {
        return;
    };
    for path in files.keys() {
        // What the reader promises the loader: relative paths inside the pack.
        assert!(
            !path.starts_with('/') && !path.split('/').any(|c| c == ".." || c.is_empty()),
            "{path:?}"
        );
    }
    match load(&files, &*INSTALLED) {
        Ok(pack) => {
            // The hive stores the model as JSON and decodes it on every read.
            let json = serde_json::to_vec(&pack).expect("a pack serializes");
            let back: Pack = serde_json::from_slice(&json).expect("a stored pack decodes");
            assert_eq!(back, pack);
        }
        Err(problems) => assert!(!problems.is_empty()),
    }
});
