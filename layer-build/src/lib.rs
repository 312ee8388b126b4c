//! Building the Lambda layer: a reproducible zip with the extension binary at
//! `extensions/<name>` (mode 0755), and a check that the binary needs no glibc
//! newer than the Lambda runtime provides.

use std::io::{Seek, Write};

use object::read::elf::{ElfFile64, FileHeader};
use object::{Endianness, elf};

/// `provided.al2023` ships glibc 2.34.
pub const MAX_GLIBC: (u32, u32) = (2, 34);

/// Errors of this crate.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Every `GLIBC_x.y` version the ELF binary `bytes` requires, sorted.
pub fn glibc_requirements(bytes: &[u8]) -> Result<Vec<(u32, u32)>, Error> {
    let file = ElfFile64::<Endianness>::parse(bytes)?;
    let endian = file.endian();
    let sections = file.elf_header().sections(endian, bytes)?;
    let mut out = Vec::new();
    if let Some((mut verneeds, link)) = sections.gnu_verneed(endian, bytes)? {
        let strings = sections.strings(endian, bytes, link)?;
        while let Some((verneed, mut auxes)) = verneeds.next()? {
            let _ = verneed;
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
            "the extension needs {} but Lambda's provided.al2023 has glibc {}.{}: build it for the x86_64-unknown-linux-gnu.{}.{} target with cargo-zigbuild",
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

/// The ELF machine of `bytes`: `x86_64` or `aarch64`.
pub fn elf_machine(bytes: &[u8]) -> Result<&'static str, Error> {
    let header = elf::FileHeader64::<Endianness>::parse(bytes)?;
    let endian = header.endian()?;
    Ok(match header.e_machine(endian) {
        elf::EM_X86_64 => "x86_64",
        elf::EM_AARCH64 => "aarch64",
        other => return Err(format!("unexpected ELF machine {other}").into()),
    })
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
