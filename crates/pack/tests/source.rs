//! Reading packs from directories and `.tar.gz` archives.

// Test code: a failed setup step should panic where it happened.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use ultron8_pack::source::{Limits, SourceError, read_dir_with_limits, read_tarball_with_limits};
use ultron8_pack::{NothingInstalled, PackFiles, load, read_dir, read_tarball};

const PACK: &[(&str, &str)] = &[
    ("pack.yaml", "name: linux\nversion: 1.0.0\n"),
    ("README.md", "# linux\n"),
    (
        "actions/clean.yaml",
        "name: clean\nrunner: script\nscript: scripts/clean.sh\n",
    ),
    ("scripts/clean.sh", "#!/bin/sh\nexit 0\n"),
    ("scripts/lib/util.sh", "# util\n"),
];

fn expected() -> PackFiles {
    PACK.iter()
        .map(|(p, c)| ((*p).to_string(), c.as_bytes().to_vec()))
        .collect()
}

fn write_tree(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let full = root.join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, content).unwrap();
    }
}

// --- directories ------------------------------------------------------------

#[test]
fn a_directory_round_trips_and_loads() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), PACK);
    // Hidden entries at any depth are skipped.
    write_tree(
        dir.path(),
        &[
            (".git/config", "[core]\n"),
            (".gitignore", "target\n"),
            ("actions/.clean.yaml.swp", "junk"),
        ],
    );
    let files = read_dir(dir.path()).unwrap();
    assert_eq!(files, expected());
    let pack = load(&files, &NothingInstalled).unwrap();
    assert_eq!(pack.scripts.len(), 2);
}

#[test]
fn links_inside_the_pack_are_read_and_links_out_of_it_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), PACK);
    symlink("clean.sh", dir.path().join("scripts/again.sh")).unwrap();
    let files = read_dir(dir.path()).unwrap();
    assert_eq!(files["scripts/again.sh"], b"#!/bin/sh\nexit 0\n");

    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), "x").unwrap();
    symlink(
        outside.path().join("secret"),
        dir.path().join("scripts/leak.sh"),
    )
    .unwrap();
    let err = read_dir(dir.path()).unwrap_err();
    assert!(
        matches!(&err, SourceError::LinkEscapes { path } if path == "scripts/leak.sh"),
        "{err}"
    );
    fs::remove_file(dir.path().join("scripts/leak.sh")).unwrap();

    symlink("../../etc", dir.path().join("scripts/up")).unwrap();
    let err = read_dir(dir.path()).unwrap_err();
    assert!(matches!(err, SourceError::LinkEscapes { .. }), "{err}");
    fs::remove_file(dir.path().join("scripts/up")).unwrap();

    symlink("lib", dir.path().join("scripts/lib2")).unwrap();
    let err = read_dir(dir.path()).unwrap_err();
    assert!(matches!(err, SourceError::Unsupported { .. }), "{err}");
    fs::remove_file(dir.path().join("scripts/lib2")).unwrap();

    symlink("nowhere", dir.path().join("scripts/dangling")).unwrap();
    let err = read_dir(dir.path()).unwrap_err();
    assert!(matches!(err, SourceError::LinkEscapes { .. }), "{err}");
}

#[test]
fn sockets_and_other_special_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), PACK);
    let _listener =
        std::os::unix::net::UnixListener::bind(dir.path().join("scripts/sock")).unwrap();
    let err = read_dir(dir.path()).unwrap_err();
    assert!(
        matches!(&err, SourceError::Unsupported { path, .. } if path == "scripts/sock"),
        "{err}"
    );
}

#[test]
fn directory_limits() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), PACK);
    let err = read_dir_with_limits(
        dir.path(),
        &Limits {
            max_entries: 100,
            max_total_bytes: 20,
        },
    )
    .unwrap_err();
    assert!(matches!(err, SourceError::TooLarge { limit: 20 }), "{err}");
    // PACK has 5 files in 3 directories.
    let err = read_dir_with_limits(
        dir.path(),
        &Limits {
            max_entries: 7,
            max_total_bytes: 1 << 20,
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, SourceError::TooManyEntries { limit: 7 }),
        "{err}"
    );
    assert!(
        read_dir_with_limits(
            dir.path(),
            &Limits {
                max_entries: 8,
                max_total_bytes: 1 << 20
            }
        )
        .is_ok()
    );
}

#[test]
fn the_default_limits_stop_a_huge_directory() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("scripts")).unwrap();
    for i in 0..Limits::default().max_entries {
        fs::write(dir.path().join(format!("scripts/{i}.sh")), "").unwrap();
    }
    let err = read_dir(dir.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the pack has more than 1000 files and directories"
    );

    let big = tempfile::tempdir().unwrap();
    let file = fs::File::create(big.path().join("big.bin")).unwrap();
    file.set_len(Limits::default().max_total_bytes + 1).unwrap();
    let err = read_dir(big.path()).unwrap_err();
    assert!(matches!(err, SourceError::TooLarge { .. }), "{err}");
}

#[test]
fn a_missing_path_or_a_file_is_not_a_pack_directory() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        read_dir(&dir.path().join("nope")),
        Err(SourceError::Io { .. })
    ));
    fs::write(dir.path().join("file"), "x").unwrap();
    assert!(matches!(
        read_dir(&dir.path().join("file")),
        Err(SourceError::NotADirectory(_))
    ));
}

// --- archives ---------------------------------------------------------------

/// One archive entry, written header by header so tests can make entries
/// `tar::Builder` itself refuses to write (`..`, absolute paths).
struct Entry<'a> {
    path: &'a str,
    kind: tar::EntryType,
    data: &'a [u8],
    link: Option<&'a str>,
}

fn file<'a>(path: &'a str, data: &'a str) -> Entry<'a> {
    Entry {
        path,
        kind: tar::EntryType::Regular,
        data: data.as_bytes(),
        link: None,
    }
}

fn dir_entry(path: &str) -> Entry<'_> {
    Entry {
        path,
        kind: tar::EntryType::Directory,
        data: b"",
        link: None,
    }
}

fn tarball(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    for entry in entries {
        let mut header = tar::Header::new_old();
        let name = &mut header.as_old_mut().name;
        name[..entry.path.len()].copy_from_slice(entry.path.as_bytes());
        header.set_entry_type(entry.kind);
        header.set_size(entry.data.len() as u64);
        header.set_mode(0o644);
        if let Some(link) = entry.link {
            header.set_link_name(link).unwrap();
        }
        header.set_cksum();
        builder.append(&header, entry.data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

#[test]
fn a_tarball_round_trips_and_its_top_directory_is_stripped() {
    let mut entries = vec![
        Entry {
            path: "pax_global_header",
            kind: tar::EntryType::XGlobalHeader,
            data: b"52 comment=0123456789abcdef0123456789abcdef01234567\n",
            link: None,
        },
        dir_entry("linux-1.0.0/"),
        dir_entry("linux-1.0.0/actions/"),
        file("linux-1.0.0/.gitignore", "target\n"),
    ];
    let prefixed: Vec<String> = PACK
        .iter()
        .map(|(p, _)| format!("linux-1.0.0/{p}"))
        .collect();
    for ((_, content), path) in PACK.iter().zip(&prefixed) {
        entries.push(file(path, content));
    }
    let files = read_tarball(&tarball(&entries)).unwrap();
    assert_eq!(files, expected());
    load(&files, &NothingInstalled).unwrap();

    // Without a prefix, and with `./` ones as `tar -C dir .` writes.
    let dotted: Vec<String> = PACK.iter().map(|(p, _)| format!("./{p}")).collect();
    let entries: Vec<Entry<'_>> = PACK
        .iter()
        .zip(&dotted)
        .map(|((_, content), path)| file(path, content))
        .chain([dir_entry("./")])
        .collect();
    assert_eq!(read_tarball(&tarball(&entries)).unwrap(), expected());
}

#[test]
fn a_tarball_built_by_the_tar_crate_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(&dir.path().join("linux"), PACK);
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::best()));
    builder
        .append_dir_all("linux", dir.path().join("linux"))
        .unwrap();
    let bytes = builder.into_inner().unwrap().finish().unwrap();
    assert_eq!(read_tarball(&bytes).unwrap(), expected());
}

#[test]
fn traversal_absolute_paths_links_and_devices_are_refused() {
    let refused = |entry: Entry<'_>| {
        read_tarball(&tarball(&[file("pack.yaml", "name: x\n"), entry])).unwrap_err()
    };
    let err = refused(file("../evil.sh", "x"));
    assert!(
        matches!(&err, SourceError::UnsafePath { path, .. } if path == "../evil.sh"),
        "{err}"
    );
    let err = refused(file("scripts/../../evil.sh", "x"));
    assert!(matches!(err, SourceError::UnsafePath { .. }), "{err}");
    let err = refused(file("/etc/cron.d/evil", "x"));
    assert!(matches!(err, SourceError::UnsafePath { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "\"/etc/cron.d/evil\": absolute paths are not allowed"
    );
    let err = refused(Entry {
        path: "scripts/passwd",
        kind: tar::EntryType::Symlink,
        data: b"",
        link: Some("/etc/passwd"),
    });
    assert!(
        matches!(err, SourceError::Unsupported { what: "links", .. }),
        "{err}"
    );
    let err = refused(Entry {
        path: "scripts/hard",
        kind: tar::EntryType::Link,
        data: b"",
        link: Some("pack.yaml"),
    });
    assert!(
        matches!(err, SourceError::Unsupported { what: "links", .. }),
        "{err}"
    );
    let err = refused(Entry {
        path: "scripts/null",
        kind: tar::EntryType::Char,
        data: b"",
        link: None,
    });
    assert!(matches!(err, SourceError::Unsupported { .. }), "{err}");
    let err = refused(Entry {
        path: "scripts/fifo",
        kind: tar::EntryType::Fifo,
        data: b"",
        link: None,
    });
    assert!(matches!(err, SourceError::Unsupported { .. }), "{err}");
    let err = refused(file("pack.yaml", "again"));
    assert!(matches!(err, SourceError::Duplicate { .. }), "{err}");
}

#[test]
fn tarball_limits_hold_against_bombs() {
    // 20 MiB of zeros compresses to a few KiB.
    let zeros = vec![0u8; 20 * 1024 * 1024];
    let bomb = tarball(&[
        file("pack.yaml", "name: x\n"),
        Entry {
            path: "scripts/zeros",
            kind: tar::EntryType::Regular,
            data: &zeros,
            link: None,
        },
    ]);
    assert!(bomb.len() < 100 * 1024);
    let err = read_tarball(&bomb).unwrap_err();
    assert!(matches!(err, SourceError::TooLarge { .. }), "{err}");

    // The same bytes in an entry that is skipped, not read: the stream
    // itself is capped.
    let skipped = tarball(&[Entry {
        path: "pax_global_header",
        kind: tar::EntryType::XGlobalHeader,
        data: &zeros,
        link: None,
    }]);
    let err = read_tarball(&skipped).unwrap_err();
    assert!(matches!(err, SourceError::TooLarge { .. }), "{err}");

    let names: Vec<String> = (0..5).map(|i| format!("scripts/{i}.sh")).collect();
    let many: Vec<Entry<'_>> = names.iter().map(|n| file(n, "")).collect();
    let limits = Limits {
        max_entries: 4,
        max_total_bytes: 1 << 20,
    };
    let err = read_tarball_with_limits(&tarball(&many), &limits).unwrap_err();
    assert!(
        matches!(err, SourceError::TooManyEntries { limit: 4 }),
        "{err}"
    );
}

#[test]
fn garbage_is_not_a_tarball() {
    let err = read_tarball(b"definitely not gzip").unwrap_err();
    assert!(matches!(err, SourceError::Archive(_)), "{err}");
    let mut truncated = tarball(&[file("pack.yaml", &"x".repeat(10_000))]);
    truncated.truncate(truncated.len() / 2);
    assert!(read_tarball(&truncated).is_err());
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(b"plain text, gzipped, not a tar").unwrap();
    assert!(read_tarball(&gz.finish().unwrap()).is_err());
}
