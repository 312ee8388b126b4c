//! Building the Lambda layer: a reproducible zip with the extension binary at
//! `extensions/<name>` (mode 0755), and the checks that the binary is for the
//! right CPU and starts on every `provided` runtime (`provided.al2`, glibc
//! 2.26, and `provided.al2023`, glibc 2.34).
//!
//! The layer ships a static musl build (no interpreter, no shared library);
//! a glibc build is accepted too when it needs nothing newer than
//! [`GLIBC_FLOOR`] and only the libraries every runtime has.

use std::io::{Seek, Write};

use object::read::elf::{Dyn, ElfFile64, FileHeader, ProgramHeader};
use object::{Endianness, elf};

/// The oldest glibc of a `provided` runtime: `provided.al2` ships 2.26
/// (`provided.al2023` ships 2.34).
pub const GLIBC_FLOOR: (u32, u32) = (2, 26);

/// Shared libraries (and dynamic loaders) that every `provided` runtime has:
/// the parts of glibc itself. Anything else (`libgcc_s`, `libssl`...) would
/// have to be in the layer.
pub const RUNTIME_LIBRARIES: &[&str] =
    &["libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"];

/// Errors of this crate.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A Lambda architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// `x86_64` (ELF machine `EM_X86_64`).
    X86_64,
    /// `arm64`, Graviton (ELF machine `EM_AARCH64`).
    Arm64,
}

impl Arch {
    /// Both architectures Lambda offers.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Arm64];

    /// Parses Lambda's name (`x86_64`, `arm64`) or the CPU's (`amd64`, `aarch64`).
    pub fn parse(name: &str) -> Result<Arch, Error> {
        match name {
            "x86_64" | "amd64" => Ok(Arch::X86_64),
            "arm64" | "aarch64" => Ok(Arch::Arm64),
            other => Err(format!("unknown architecture {other:?}: use x86_64 or arm64").into()),
        }
    }

    /// Lambda's name for it, as in `Architectures` and the zip's file name.
    pub fn lambda_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The Rust target for this architecture and C library.
    pub fn rust_target(self, libc: Libc) -> &'static str {
        match (self, libc) {
            (Arch::X86_64, Libc::Musl) => "x86_64-unknown-linux-musl",
            (Arch::Arm64, Libc::Musl) => "aarch64-unknown-linux-musl",
            (Arch::X86_64, Libc::Gnu) => "x86_64-unknown-linux-gnu",
            (Arch::Arm64, Libc::Gnu) => "aarch64-unknown-linux-gnu",
        }
    }

    /// The ELF `e_machine` of its binaries.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => elf::EM_X86_64,
            Arch::Arm64 => elf::EM_AARCH64,
        }
    }
}

/// The C library the extension is built against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Libc {
    /// Static musl: no interpreter, no shared library (what the layer ships).
    Musl,
    /// glibc, linked against [`GLIBC_FLOOR`] with cargo-zigbuild.
    Gnu,
}

impl Libc {
    /// Parses `musl` or `gnu`.
    pub fn parse(name: &str) -> Result<Libc, Error> {
        match name {
            "musl" => Ok(Libc::Musl),
            "gnu" | "glibc" => Ok(Libc::Gnu),
            other => Err(format!("unknown C library {other:?}: use musl or gnu").into()),
        }
    }

    /// The target cargo-zigbuild builds for (`<triple>.2.26` for glibc).
    pub fn zig_target(self, arch: Arch) -> String {
        match self {
            Libc::Musl => arch.rust_target(self).to_owned(),
            Libc::Gnu => format!("{}.{}.{}", arch.rust_target(self), GLIBC_FLOOR.0, GLIBC_FLOOR.1),
        }
    }
}

/// What an ELF binary needs from the system to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LibraryNeeds {
    /// Its ELF machine.
    pub arch: Arch,
    /// The dynamic loader (`PT_INTERP`), if any.
    pub interpreter: Option<String>,
    /// The shared libraries (`DT_NEEDED`), in order.
    pub needed: Vec<String>,
    /// Every `GLIBC_x.y` symbol version it requires, sorted.
    pub glibc: Vec<(u32, u32)>,
}

impl LibraryNeeds {
    /// True for a static executable: no loader, no shared library, no glibc symbol.
    pub fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.needed.is_empty() && self.glibc.is_empty()
    }

    /// The newest glibc version it requires.
    pub fn newest_glibc(&self) -> Option<(u32, u32)> {
        self.glibc.last().copied()
    }

    /// One line: `static (no interpreter, no shared library)`, or the
    /// libraries and the newest glibc symbol.
    pub fn summary(&self) -> String {
        if self.is_static() {
            return "static (no interpreter, no shared library)".to_owned();
        }
        let newest = self.newest_glibc().map(|(a, b)| format!("GLIBC_{a}.{b}")).unwrap_or_else(|| "none".to_owned());
        format!(
            "interpreter {}, needs {}, newest glibc symbol {newest}",
            self.interpreter.as_deref().unwrap_or("none"),
            if self.needed.is_empty() { "no library".to_owned() } else { self.needed.join(" ") }
        )
    }
}

/// The architecture of the ELF binary `bytes` (an error for any other machine).
pub fn elf_machine(bytes: &[u8]) -> Result<Arch, Error> {
    let header = elf::FileHeader64::<Endianness>::parse(bytes)?;
    let endian = header.endian()?;
    match header.e_machine(endian) {
        elf::EM_X86_64 => Ok(Arch::X86_64),
        elf::EM_AARCH64 => Ok(Arch::Arm64),
        other => Err(format!("unexpected ELF machine {other}").into()),
    }
}

/// Reads what the ELF binary `bytes` needs: its loader, its shared libraries
/// and its glibc symbol versions.
pub fn library_needs(bytes: &[u8]) -> Result<LibraryNeeds, Error> {
    let arch = elf_machine(bytes)?;
    let file = ElfFile64::<Endianness>::parse(bytes)?;
    let endian = file.endian();
    let header = file.elf_header();
    let mut interpreter = None;
    for segment in header.program_headers(endian, bytes)? {
        if let Some(path) = segment.interpreter(endian, bytes)? {
            interpreter = Some(String::from_utf8_lossy(path).into_owned());
        }
    }
    let sections = header.sections(endian, bytes)?;
    let mut needed = Vec::new();
    if let Some((entries, link)) = sections.dynamic(endian, bytes)? {
        let strings = sections.strings(endian, bytes, link)?;
        for entry in entries {
            if entry.tag32(endian) == Some(elf::DT_NEEDED) {
                needed.push(String::from_utf8_lossy(entry.string(endian, strings)?).into_owned());
            }
        }
    }
    Ok(LibraryNeeds { arch, interpreter, needed, glibc: glibc_requirements(bytes)? })
}

/// Every `GLIBC_x.y` version the ELF binary `bytes` requires, sorted.
pub fn glibc_requirements(bytes: &[u8]) -> Result<Vec<(u32, u32)>, Error> {
    let file = ElfFile64::<Endianness>::parse(bytes)?;
    let endian = file.endian();
    let sections = file.elf_header().sections(endian, bytes)?;
    let mut out = Vec::new();
    if let Some((mut verneeds, link)) = sections.gnu_verneed(endian, bytes)? {
        let strings = sections.strings(endian, bytes, link)?;
        while let Some((_, mut auxes)) = verneeds.next()? {
            while let Some(aux) = auxes.next()? {
                let name = String::from_utf8_lossy(aux.name(endian, strings)?).into_owned();
                if let Some(v) = parse_glibc(&name) {
                    out.push(v);
                }
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn parse_glibc(name: &str) -> Option<(u32, u32)> {
    let rest = name.strip_prefix("GLIBC_")?;
    let mut parts = rest.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().unwrap_or("0").parse().ok()?;
    Some((major, minor))
}

/// Fails, naming the offending versions, if `bytes` needs a glibc newer than `max`.
pub fn check_glibc(bytes: &[u8], max: (u32, u32)) -> Result<Vec<(u32, u32)>, Error> {
    let needed = glibc_requirements(bytes)?;
    let too_new: Vec<String> = needed.iter().filter(|v| **v > max).map(|(a, b)| format!("GLIBC_{a}.{b}")).collect();
    if !too_new.is_empty() {
        return Err(format!(
            "the extension needs {} but provided.al2 has glibc {}.{}: build it static (musl) or for the <triple>.{}.{} target with cargo-zigbuild",
            too_new.join(", "),
            max.0,
            max.1,
            max.0,
            max.1
        )
        .into());
    }
    Ok(needed)
}

/// Checks that a binary with these needs, built for `arch`, starts on every
/// `provided` runtime of that architecture: the right machine, and either
/// static or glibc-only libraries no newer than [`GLIBC_FLOOR`].
pub fn check_runs_on_provided(needs: &LibraryNeeds, arch: Arch) -> Result<(), Error> {
    if needs.arch != arch {
        return Err(format!("the binary is for {}, not {}", needs.arch.lambda_name(), arch.lambda_name()).into());
    }
    if needs.is_static() {
        return Ok(());
    }
    let foreign: Vec<&str> = needs.needed.iter().map(String::as_str).filter(|l| !RUNTIME_LIBRARIES.contains(l)).collect();
    if !foreign.is_empty() {
        return Err(format!("the binary needs {} that the provided runtimes do not have", foreign.join(", ")).into());
    }
    if let Some(interp) = &needs.interpreter {
        let name = interp.rsplit('/').next().unwrap_or(interp);
        if !RUNTIME_LIBRARIES.contains(&name) {
            return Err(format!("unexpected interpreter {interp}").into());
        }
    }
    if let Some(newest) = needs.newest_glibc().filter(|v| *v > GLIBC_FLOOR) {
        return Err(format!(
            "the binary needs GLIBC_{}.{} but provided.al2 has glibc {}.{}",
            newest.0, newest.1, GLIBC_FLOOR.0, GLIBC_FLOOR.1
        )
        .into());
    }
    Ok(())
}

/// Writes the layer zip: a directory entry `extensions/` and the binary as
/// `extensions/<name>` with mode 0755, in that order, both dated 1980-01-01,
/// deflated at a fixed level. The same binary always gives the same bytes.
pub fn write_layer_zip<W: Write + Seek>(out: W, name: &str, binary: &[u8]) -> Result<W, Error> {
    if name.is_empty() || name.contains('/') {
        return Err(format!("invalid extension name {name:?}").into());
    }
    let mut zip = zip::ZipWriter::new(out);
    let dir = zip::write::SimpleFileOptions::default()
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o755)
        .compression_method(zip::CompressionMethod::Stored);
    zip.add_directory("extensions/", dir)?;
    let file = zip::write::SimpleFileOptions::default()
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o755)
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(9));
    zip.start_file(format!("extensions/{name}"), file)?;
    zip.write_all(binary)?;
    Ok(zip.finish()?)
}

/// Writes the layer's content into `dir` (as the zip would unpack):
/// `dir/extensions/<name>` with mode 0755. For `sam build`, which zips
/// the directory itself.
pub fn write_layer_dir(dir: &std::path::Path, name: &str, binary: &[u8]) -> Result<std::path::PathBuf, Error> {
    use std::os::unix::fs::PermissionsExt;
    if name.is_empty() || name.contains('/') {
        return Err(format!("invalid extension name {name:?}").into());
    }
    let extensions = dir.join("extensions");
    std::fs::create_dir_all(&extensions)?;
    let path = extensions.join(name);
    std::fs::write(&path, binary)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}
