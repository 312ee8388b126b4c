//! Validation against AWS's segment-document JSON schema (`fixtures/xray-segment-schema.json`).

use std::sync::OnceLock;

use serde_json::Value;

use crate::Error;

/// Where the schema lives, relative to this crate.
pub const SCHEMA_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/xray-segment-schema.json");

fn validator() -> Result<&'static jsonschema::Validator, Error> {
    static V: OnceLock<Result<jsonschema::Validator, String>> = OnceLock::new();
    V.get_or_init(|| {
        let text = std::fs::read_to_string(SCHEMA_PATH).map_err(|e| format!("{SCHEMA_PATH}: {e}"))?;
        let schema: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        jsonschema::draft4::new(&schema).map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| e.clone().into())
}

/// Checks one document against the schema; the error lists every violation.
pub fn validate(doc: &Value) -> Result<(), Error> {
    let v = validator()?;
    let errors: Vec<String> = v.iter_errors(doc).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    if errors.is_empty() { Ok(()) } else { Err(format!("schema violations: {}\n{doc}", errors.join("; ")).into()) }
}
