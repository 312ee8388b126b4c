//! The layer zip's layout, modes and determinism, the ELF checks, and the two
//! layers `scripts/test.sh` builds (`cargo run -p layer-build -- --arch x86_64|arm64`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Cursor, Read};

use layer_build::{
    Arch, GLIBC_FLOOR, LibraryNeeds, check_glibc, check_runs_on_provided, elf_machine, glibc_requirements, library_needs, write_layer_dir,
    write_layer_zip,
};

/// A slice of this test's own binary: real ELF bytes, small enough to deflate quickly.
fn sample_binary() -> Vec<u8> {
    let mut bytes = std::fs::read(std::env::current_exe().expect("exe")).expect("read");
    bytes.truncate(256 * 1024);
    bytes
}

fn zip_of(binary: &[u8]) -> Vec<u8> {
    write_layer_zip(Cursor::new(Vec::new()), "lambda-xray-extension", binary).map(Cursor::into_inner).expect("zip")
}

fn entry_names(bytes: &[u8]) -> Vec<String> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).expect("valid zip");
    (0..zip.len()).map(|i| zip.by_index(i).expect("entry").name().expect("name").to_string()).collect()
}

#[test]
fn layout_and_modes() {
    let binary = sample_binary();
    let bytes = zip_of(&binary);
    assert_eq!(entry_names(&bytes), vec!["extensions/", "extensions/lambda-xray-extension"]);
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).expect("valid zip");
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
fn a_dynamic_glibc_binary_is_read() {
    // This test binary is linked dynamically against the build machine's glibc.
    let binary = std::fs::read(std::env::current_exe().expect("exe")).expect("read");
    let host = if cfg!(target_arch = "aarch64") { Arch::Arm64 } else { Arch::X86_64 };
    assert_eq!(elf_machine(&binary).expect("elf"), host);
    let needs = library_needs(&binary).expect("parse");
    assert!(!needs.is_static(), "{needs:?}");
    assert!(needs.interpreter.as_deref().is_some_and(|i| i.contains("ld-linux")), "{needs:?}");
    assert!(needs.needed.iter().any(|l| l == "libc.so.6"), "{needs:?}");
    assert_eq!(needs.glibc, glibc_requirements(&binary).expect("parse"));
    // A limit below what it needs is reported by name.
    let newest = needs.newest_glibc().expect("some glibc symbol");
    let err = check_glibc(&binary, (2, 0)).expect_err("too new").to_string();
    assert!(err.contains(&format!("GLIBC_{}.{}", newest.0, newest.1)), "{err}");
    // Built for the host, so never for the other architecture.
    let other = if host == Arch::X86_64 { Arch::Arm64 } else { Arch::X86_64 };
    assert!(check_runs_on_provided(&needs, other).is_err());
    assert!(library_needs(b"not an elf").is_err());
}

#[test]
fn what_runs_on_every_provided_runtime() {
    let base = LibraryNeeds { arch: Arch::Arm64, interpreter: None, needed: vec![], glibc: vec![] };
    assert!(base.is_static());
    assert!(check_runs_on_provided(&base, Arch::Arm64).is_ok());
    let err = check_runs_on_provided(&base, Arch::X86_64).expect_err("wrong machine").to_string();
    assert!(err.contains("arm64") && err.contains("x86_64"), "{err}");
    let glibc = |versions: Vec<(u32, u32)>, needed: &[&str]| LibraryNeeds {
        arch: Arch::Arm64,
        interpreter: Some("/lib/ld-linux-aarch64.so.1".into()),
        needed: needed.iter().map(|s| s.to_string()).collect(),
        glibc: versions,
    };
    // glibc 2.26 and older, glibc's own libraries: accepted.
    assert!(check_runs_on_provided(&glibc(vec![(2, 17), GLIBC_FLOOR], &["libc.so.6", "libm.so.6"]), Arch::Arm64).is_ok());
    // glibc 2.34 (provided.al2023 only): refused, naming the version.
    let err = check_runs_on_provided(&glibc(vec![(2, 17), (2, 34)], &["libc.so.6"]), Arch::Arm64).expect_err("too new").to_string();
    assert!(err.contains("GLIBC_2.34") && err.contains("2.26"), "{err}");
    // A library the runtimes do not have: refused by name.
    let err = check_runs_on_provided(&glibc(vec![(2, 17)], &["libc.so.6", "libgcc_s.so.1"]), Arch::Arm64).expect_err("foreign").to_string();
    assert!(err.contains("libgcc_s.so.1"), "{err}");
    // An unknown loader.
    let mut odd = glibc(vec![(2, 17)], &["libc.so.6"]);
    odd.interpreter = Some("/lib/ld-musl-aarch64.so.1".into());
    assert!(check_runs_on_provided(&odd, Arch::Arm64).is_err());
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

/// Reads `target/lambda-xray-layer-<arch>.zip`, checks its layout, and returns the zip and the extension binary.
fn built_layer(arch: Arch) -> (Vec<u8>, Vec<u8>) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| root.join("target"));
    let path = target.join(format!("lambda-xray-layer-{}.zip", arch.lambda_name()));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{}: {e} (run `cargo run -p layer-build -- --arch {}` first, as scripts/test.sh does)", path.display(), arch.lambda_name())
    });
    assert!(bytes.len() <= 1_500_000, "{}: {} bytes, over the 1.5 MB budget", path.display(), bytes.len());
    assert_eq!(entry_names(&bytes), vec!["extensions/", "extensions/lambda-xray-extension"]);
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes.clone())).expect("valid zip");
    let mut f = zip.by_name("extensions/lambda-xray-extension").expect("entry");
    assert!(f.is_file());
    assert_eq!(f.unix_mode().map(|m| m & 0o777), Some(0o755));
    let mut binary = Vec::new();
    f.read_to_end(&mut binary).expect("inflate");
    (bytes, binary)
}

/// The ELF header itself, read without the crate under test: 64-bit,
/// little-endian, and `e_machine` (offset 18) as Lambda's CPU.
fn raw_machine(binary: &[u8]) -> u16 {
    assert_eq!(&binary[..4], b"\x7fELF");
    assert_eq!(binary[4], 2, "ELFCLASS64");
    assert_eq!(binary[5], 1, "little-endian");
    u16::from_le_bytes([binary[18], binary[19]])
}

fn check_built_layer(arch: Arch, machine: u16) {
    let (zip, binary) = built_layer(arch);
    assert_eq!(raw_machine(&binary), machine);
    assert_eq!(arch.elf_machine(), machine);
    let needs = library_needs(&binary).expect("ELF");
    assert_eq!(needs.arch, arch);
    // Static: starts on provided.al2 (glibc 2.26) and provided.al2023 (2.34) alike.
    assert_eq!(needs.interpreter, None, "a static binary has no PT_INTERP");
    assert_eq!(needs.needed, Vec::<String>::new(), "a static binary has no DT_NEEDED");
    assert_eq!(needs.glibc, Vec::<(u32, u32)>::new(), "a static binary has no GLIBC symbol versions");
    check_runs_on_provided(&needs, arch).expect("runs on every provided runtime");
    // Reproducible: the zip is exactly what the binary gives.
    assert_eq!(zip_of(&binary), zip, "the zip is not the deterministic packing of its binary");
}

#[test]
fn the_built_x86_64_layer_holds_a_static_x86_64_extension() {
    check_built_layer(Arch::X86_64, 62); // EM_X86_64
}

#[test]
fn the_built_arm64_layer_holds_a_static_aarch64_extension() {
    check_built_layer(Arch::Arm64, 183); // EM_AARCH64
}

/// The emulator that runs arm64 binaries here: `QEMU_AARCH64`, else
/// qemu-user's `qemu-aarch64-static` or `qemu-aarch64` (`scripts/setup-system.sh`
/// installs Debian's `qemu-user-static`).
fn qemu_aarch64() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("QEMU_AARCH64") {
        return path.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| [dir.join("qemu-aarch64-static"), dir.join("qemu-aarch64")])
        .find(|p| p.is_file())
        .expect("qemu-user is needed to run the arm64 extension: run scripts/setup-system.sh (installs Debian's qemu-user-static) or set QEMU_AARCH64")
}

/// The exact bytes of the layer's binary start with an empty environment
/// (no loader or library looked up, nothing from the host's settings): the
/// extension says it is not under Lambda and exits with status 1.
fn check_built_layer_starts(arch: Arch) {
    use std::os::unix::fs::PermissionsExt;
    let (_, binary) = built_layer(arch);
    let path = std::env::temp_dir().join(format!("layer-run-{}-{}", arch.lambda_name(), std::process::id()));
    std::fs::write(&path, &binary).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let host = if cfg!(target_arch = "aarch64") { Arch::Arm64 } else { Arch::X86_64 };
    let mut command = if arch == host {
        std::process::Command::new(&path)
    } else {
        assert_eq!(arch, Arch::Arm64, "no emulator set up for {arch:?} on this host");
        let mut c = std::process::Command::new(qemu_aarch64());
        c.arg(&path);
        c
    };
    let output = command.env_clear().output().expect("run the extension");
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("AWS_LAMBDA_RUNTIME_API is not set"), "{stderr}");
}

#[test]
fn the_built_x86_64_extension_starts() {
    check_built_layer_starts(Arch::X86_64);
}

#[test]
fn the_built_arm64_extension_starts_under_qemu() {
    check_built_layer_starts(Arch::Arm64);
}
