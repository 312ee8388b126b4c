//! The layer zip's layout, modes and determinism, and the glibc check.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Cursor, Read};

use layer_build::{MAX_GLIBC, check_glibc, elf_machine, glibc_requirements, write_layer_dir, write_layer_zip};

/// A slice of this test's own binary: real ELF bytes, small enough to deflate quickly.
fn sample_binary() -> Vec<u8> {
    let mut bytes = std::fs::read(std::env::current_exe().expect("exe")).expect("read");
    bytes.truncate(256 * 1024);
    bytes
}

fn zip_of(binary: &[u8]) -> Vec<u8> {
    write_layer_zip(Cursor::new(Vec::new()), "lambda-xray-extension", binary).map(Cursor::into_inner).expect("zip")
}

#[test]
fn layout_and_modes() {
    let binary = sample_binary();
    let bytes = zip_of(&binary);
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).expect("valid zip");
    let names: Vec<String> = (0..zip.len()).map(|i| zip.by_index(i).expect("entry").name().expect("name").to_string()).collect();
    assert_eq!(names, vec!["extensions/", "extensions/lambda-xray-extension"]);
    let mut f = zip.by_name("extensions/lambda-xray-extension").expect("entry");
    assert_eq!(f.unix_mode().map(|m| m & 0o777), Some(0o755));
    assert!(f.is_file());
    let mut back = Vec::new();
    f.read_to_end(&mut back).expect("inflate");
    assert_eq!(back, binary);
    drop(f);
    let d = zip.by_name("extensions/").expect("dir");
    assert!(d.is_dir());
}

#[test]
fn the_same_binary_gives_byte_identical_zips() {
    let binary = sample_binary();
    let a = zip_of(&binary);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = zip_of(&binary);
    assert_eq!(a, b);
    let mut other = binary.clone();
    other[0x100] ^= 0xff;
    assert_ne!(zip_of(&other), a);
}

#[test]
fn glibc_versions_are_read_from_the_elf() {
    // This test binary is linked against the build machine's glibc.
    let binary = std::fs::read(std::env::current_exe().expect("exe")).expect("read");
    assert_eq!(elf_machine(&binary).expect("elf"), "x86_64");
    let needed = glibc_requirements(&binary).expect("parse");
    assert!(needed.contains(&(2, 2)) || needed.iter().any(|v| v.0 == 2), "{needed:?}");
    // A limit below what it needs is reported by name.
    let newest = *needed.last().expect("some glibc symbol");
    let err = check_glibc(&binary, (2, 0)).expect_err("too new").to_string();
    assert!(err.contains(&format!("GLIBC_{}.{}", newest.0, newest.1)), "{err}");
    assert!(glibc_requirements(b"not an elf").is_err());
}

/// The layer produced by `cargo run -p layer-build` (scripts/test.sh runs it first).
#[test]
fn the_built_layer_holds_a_glibc_2_34_extension() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| root.join("target"));
    let path = target.join("lambda-xray-layer-x86_64.zip");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run `cargo run -p layer-build` first)", path.display()));
    assert!(bytes.len() <= 1_500_000, "layer zip is {} bytes", bytes.len());
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).expect("valid zip");
    let mut f = zip.by_name("extensions/lambda-xray-extension").expect("entry");
    assert_eq!(f.unix_mode().map(|m| m & 0o777), Some(0o755));
    let mut binary = Vec::new();
    f.read_to_end(&mut binary).expect("inflate");
    assert_eq!(elf_machine(&binary).expect("elf"), "x86_64");
    let needed = check_glibc(&binary, MAX_GLIBC).expect("needs no glibc newer than 2.34");
    assert!(!needed.is_empty());
}

#[test]
fn the_layer_directory_matches_the_zip() {
    use std::os::unix::fs::PermissionsExt;
    let binary = sample_binary();
    let dir = std::env::temp_dir().join(format!("layer-dir-{}", std::process::id()));
    let path = write_layer_dir(&dir, "lambda-xray-extension", &binary).expect("write");
    assert_eq!(path, dir.join("extensions/lambda-xray-extension"));
    assert_eq!(std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777, 0o755);
    assert_eq!(std::fs::read(&path).expect("read"), binary);
    let _ = std::fs::remove_dir_all(&dir);
}
