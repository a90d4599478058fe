//! How an attempt ended, as a driver observed it, and the output contract.

use serde_json::{Map, Value};

/// Largest output object a task may write, in bytes (the Kubernetes termination message limit).
pub const MAX_OUTPUT_BYTES: usize = 4096;

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The process exited. `output` is what it wrote to `ORK_OUTPUT` (empty when nothing).
    Exited { code: i32, output: Vec<u8> },
    /// The attempt ran past its timeout and was stopped by the driver's own mechanism
    /// (e.g. the Job's `activeDeadlineSeconds`).
    TimedOut,
    /// The process exited non-zero for a reason the driver knows better than "Error" (e.g.
    /// `OOMKilled`); `reason` is a CamelCase word for the status.
    Terminated {
        code: i32,
        reason: String,
        message: String,
    },
    /// The attempt could not run or was lost; `reason` is a CamelCase word for the status.
    Failed { reason: String, message: String },
    /// The attempt can never run as asked (the API server refused its Job, say): retrying
    /// cannot help, so the task fails for good whatever its retry policy.
    Refused { reason: String, message: String },
}

/// Checks an attempt's output against the contract: empty, or one JSON object of at most
/// [`MAX_OUTPUT_BYTES`]. The error is the message for an `InvalidOutput` failure.
pub fn parse_output(output: &[u8]) -> Result<Map<String, Value>, String> {
    if output.len() > MAX_OUTPUT_BYTES {
        return Err(format!(
            "output is {} bytes or more, the limit is {MAX_OUTPUT_BYTES}",
            output.len()
        ));
    }
    if output.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(output) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!(
            "output must be a JSON object, got {}",
            json_kind(&other)
        )),
        Err(err) => Err(format!("output is not valid JSON: {err}")),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_contract() {
        assert_eq!(parse_output(b"").unwrap(), Map::new());
        assert_eq!(parse_output(b" \n").unwrap(), Map::new());
        assert_eq!(parse_output(br#"{"rows": 3}"#).unwrap()["rows"], 3);
        assert!(parse_output(b"[1]").unwrap_err().contains("an array"));
        assert!(parse_output(b"{").unwrap_err().contains("not valid JSON"));
        let big = format!(r#"{{"k": "{}"}}"#, "x".repeat(MAX_OUTPUT_BYTES));
        assert!(
            parse_output(big.as_bytes())
                .unwrap_err()
                .contains("limit is 4096")
        );
        let exact = format!(r#"{{"k":"{}"}}"#, "x".repeat(MAX_OUTPUT_BYTES - 8));
        assert_eq!(exact.len(), MAX_OUTPUT_BYTES);
        assert!(parse_output(exact.as_bytes()).is_ok());
    }
}
