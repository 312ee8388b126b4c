//! `cargo run -p layer-build -- [--arch x86_64|arm64] [--libc musl|gnu] [--out PATH] [--binary PATH] [--dir DIR]`
//!
//! Builds the extension in release mode with cargo-zigbuild (zig and
//! cargo-zigbuild from `.venv`, `scripts/setup-python.sh`; the Rust targets
//! from `scripts/setup-rust.sh`), checks the binary's ELF machine and what it
//! needs to start (static, or glibc no newer than 2.26, so it runs on
//! `provided.al2` and `provided.al2023`), and writes the layer zip.
//!
//! - `--arch`: `x86_64` (default) or `arm64`.
//! - `--libc`: `musl` (default, a static binary: what the layer ships) or
//!   `gnu` (glibc 2.26 floor; for comparison, written to
//!   `lambda-xray-layer-<arch>-gnu.zip`).
//! - `--out`: the zip (default `target/lambda-xray-layer-<arch>.zip`).
//! - `--binary`: package an existing binary instead of building.
//! - `--dir DIR`: also lay the layer out in `DIR` (`DIR/extensions/<name>`, for `sam build`).
//!
//! The build remaps `$CARGO_HOME` to `/cargo` in the binary's panic
//! locations, so the same sources, toolchain and zig give the same bytes on
//! any machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use layer_build::{Arch, Error, Libc, check_runs_on_provided, library_needs, write_layer_dir, write_layer_zip};

const PACKAGE: &str = "lambda-xray-extension";
const EXTENSION_NAME: &str = "lambda-xray-extension";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"))
}

fn rust_target_installed(triple: &str) -> bool {
    match Command::new("rustup").args(["target", "list", "--installed"]).output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == triple),
        // Without rustup we can't tell: let the build say.
        Err(_) => true,
    }
}

fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME").map(PathBuf::from).or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}

fn build(root: &Path, arch: Arch, libc: Libc) -> Result<PathBuf, Error> {
    let triple = arch.rust_target(libc);
    let venv_bin = root.join(".venv/bin");
    let path = std::env::join_paths(
        std::iter::once(venv_bin.clone()).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )?;
    let has_zigbuild = std::env::split_paths(&path).any(|p| p.join("cargo-zigbuild").exists());
    if !has_zigbuild {
        return Err("cargo-zigbuild is not installed: run scripts/setup-python.sh (installs cargo-zigbuild and ziglang into .venv)".into());
    }
    let zig_target = libc.zig_target(arch);
    eprintln!("building {PACKAGE} for {zig_target} (release)...");
    let mut command = Command::new("cargo");
    command
        .args(["zigbuild", "--release", "--locked", "-p", PACKAGE, "--bin", EXTENSION_NAME, "--target", &zig_target])
        .current_dir(root)
        .env("PATH", &path);
    if let Some(home) = cargo_home() {
        // Registry sources are compiled from $CARGO_HOME: keep that path out of the binary.
        let var = format!("CARGO_TARGET_{}_RUSTFLAGS", triple.to_uppercase().replace('-', "_"));
        command.env(var, format!("--remap-path-prefix={}=/cargo", home.display()));
    }
    let status = command.status()?;
    if !status.success() {
        return Err(format!("cargo zigbuild failed ({status})").into());
    }
    Ok(target_dir(root).join(triple).join("release").join(PACKAGE))
}

fn run() -> Result<(), Error> {
    let mut arch = Arch::X86_64;
    let mut libc = Libc::Musl;
    let mut out: Option<PathBuf> = None;
    let mut binary: Option<PathBuf> = None;
    let mut dir: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--arch" => arch = Arch::parse(&args.next().ok_or("--arch needs x86_64 or arm64")?)?,
            "--libc" => libc = Libc::parse(&args.next().ok_or("--libc needs musl or gnu")?)?,
            "--out" => out = Some(args.next().ok_or("--out needs a path")?.into()),
            "--binary" => binary = Some(args.next().ok_or("--binary needs a path")?.into()),
            "--dir" => dir = Some(args.next().ok_or("--dir needs a path")?.into()),
            "-h" | "--help" => {
                println!("layer-build [--arch x86_64|arm64] [--libc musl|gnu] [--out PATH] [--binary PATH] [--dir DIR]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?} (see --help)").into()),
        }
    }
    let root = workspace_root();
    let binary = match binary {
        Some(b) => b,
        None => {
            let triple = arch.rust_target(libc);
            if !rust_target_installed(triple) {
                return Err(format!(
                    "the Rust target {triple} is not installed: run scripts/setup-rust.sh (or `rustup target add {triple}`) to build the {} layer",
                    arch.lambda_name()
                )
                .into());
            }
            build(&root, arch, libc)?
        }
    };
    let bytes = std::fs::read(&binary).map_err(|e| format!("{}: {e}", binary.display()))?;
    let needs = library_needs(&bytes)?;
    check_runs_on_provided(&needs, arch).map_err(|e| format!("{}: {e}", binary.display()))?;
    let suffix = if libc == Libc::Gnu { "-gnu" } else { "" };
    let out = out.unwrap_or_else(|| target_dir(&root).join(format!("lambda-xray-layer-{}{suffix}.zip", arch.lambda_name())));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::File::create(&out)?;
    write_layer_zip(file, EXTENSION_NAME, &bytes)?;
    if let Some(dir) = dir {
        let path = write_layer_dir(&dir, EXTENSION_NAME, &bytes)?;
        println!("{}: layer content for sam build", path.display());
    }
    let size = std::fs::metadata(&out)?.len();
    println!(
        "{}: {} bytes ({:.2} MB); {} extension binary {} bytes, {}",
        out.display(),
        size,
        size as f64 / 1_000_000.0,
        arch.lambda_name(),
        bytes.len(),
        needs.summary()
    );
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("layer-build: {e}");
        std::process::exit(1);
    }
}
