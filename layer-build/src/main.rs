//! `cargo run -p layer-build -- [--arch x86_64|arm64] [--out PATH] [--binary PATH]`
//!
//! Builds the extension in release mode for glibc 2.34 (Lambda's
//! `provided.al2023`) with cargo-zigbuild, checks the glibc versions the binary
//! needs, and writes the layer zip (default `target/lambda-xray-layer-<arch>.zip`).
//! `--binary` skips the build and packages an existing binary; `--dir DIR`
//! also lays the layer out in `DIR` (`DIR/extensions/<name>`, for `sam build`).

use std::path::{Path, PathBuf};
use std::process::Command;

use layer_build::{Error, MAX_GLIBC, check_glibc, elf_machine, write_layer_dir, write_layer_zip};

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

fn build(root: &Path, triple: &str) -> Result<PathBuf, Error> {
    let venv_bin = root.join(".venv/bin");
    let path = std::env::join_paths(
        std::iter::once(venv_bin.clone()).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )?;
    let has_zigbuild = std::env::split_paths(&path).any(|p| p.join("cargo-zigbuild").exists());
    if !has_zigbuild {
        return Err("cargo-zigbuild is not installed: run scripts/setup-python.sh (installs cargo-zigbuild and ziglang into .venv)".into());
    }
    let zig_target = format!("{triple}.{}.{}", MAX_GLIBC.0, MAX_GLIBC.1);
    eprintln!("building {PACKAGE} for {zig_target} (release)...");
    let status = Command::new("cargo")
        .args(["zigbuild", "--release", "--locked", "-p", PACKAGE, "--target", &zig_target])
        .current_dir(root)
        .env("PATH", &path)
        .status()?;
    if !status.success() {
        return Err(format!("cargo zigbuild failed ({status})").into());
    }
    Ok(target_dir(root).join(triple).join("release").join(PACKAGE))
}

fn run() -> Result<(), Error> {
    let mut arch = "x86_64".to_owned();
    let mut out: Option<PathBuf> = None;
    let mut binary: Option<PathBuf> = None;
    let mut dir: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--arch" => arch = args.next().ok_or("--arch needs x86_64 or arm64")?,
            "--out" => out = Some(args.next().ok_or("--out needs a path")?.into()),
            "--binary" => binary = Some(args.next().ok_or("--binary needs a path")?.into()),
            "--dir" => dir = Some(args.next().ok_or("--dir needs a path")?.into()),
            "-h" | "--help" => {
                println!("layer-build [--arch x86_64|arm64] [--out PATH] [--binary PATH] [--dir DIR]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?} (see --help)").into()),
        }
    }
    let (triple, machine) = match arch.as_str() {
        "x86_64" | "amd64" => ("x86_64-unknown-linux-gnu", "x86_64"),
        "arm64" | "aarch64" => ("aarch64-unknown-linux-gnu", "aarch64"),
        other => return Err(format!("unknown architecture {other:?}: use x86_64 or arm64").into()),
    };
    let arch_name = if machine == "aarch64" { "arm64" } else { "x86_64" };
    let root = workspace_root();
    let binary = match binary {
        Some(b) => b,
        None => {
            if !rust_target_installed(triple) {
                return Err(format!(
                    "the Rust target {triple} is not installed: run `rustup target add {triple}` to build the {arch_name} layer"
                )
                .into());
            }
            build(&root, triple)?
        }
    };
    let bytes = std::fs::read(&binary).map_err(|e| format!("{}: {e}", binary.display()))?;
    let found = elf_machine(&bytes)?;
    if found != machine {
        return Err(format!("{} is a {found} binary, not {machine}", binary.display()).into());
    }
    let needed = check_glibc(&bytes, MAX_GLIBC)?;
    let newest = needed.last().map(|(a, b)| format!("GLIBC_{a}.{b}")).unwrap_or_else(|| "none".to_owned());
    let out = out.unwrap_or_else(|| target_dir(&root).join(format!("lambda-xray-layer-{arch_name}.zip")));
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
        "{}: {} bytes ({:.2} MB); extension binary {} bytes; newest glibc symbol {newest} (limit GLIBC_{}.{})",
        out.display(),
        size,
        size as f64 / 1_000_000.0,
        bytes.len(),
        MAX_GLIBC.0,
        MAX_GLIBC.1
    );
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("layer-build: {e}");
        std::process::exit(1);
    }
}
