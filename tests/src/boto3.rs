//! boto3, the S3 client applications use, run as a test's client: a Python program gets `s3`, a
//! client set up the way an application sets one up (path-style addressing, SigV4, one attempt),
//! and answers with one JSON line, so a test reads S3's error codes as the application would.

use serde_json::Value;
use tokio::process::Command;

use crate::error::{Error, Result};
use crate::process::run;

/// What every program starts with: the client, from the first three arguments.
const PROLOGUE: &str = r#"
import json, sys
import boto3, botocore
from botocore.config import Config

endpoint, key_id, secret = sys.argv[1:4]
s3 = boto3.client(
    "s3", endpoint_url=endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret,
    region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                  retries={"max_attempts": 1}),
)
"#;

/// What every program ends with: `call`'s fields as `{"ok": true, ...}`, or S3's refusal.
const EPILOGUE: &str = r#"
try:
    print(json.dumps({"ok": True, **(call(s3, sys.argv[4:]) or {})}))
except botocore.exceptions.ClientError as e:
    print(json.dumps({"ok": False, "code": e.response["Error"]["Code"],
                      "message": e.response["Error"].get("Message", ""),
                      "status": e.response["ResponseMetadata"]["HTTPStatusCode"]}))
except boto3.exceptions.S3UploadFailedError as e:
    print(json.dumps({"ok": False, "code": "S3UploadFailedError", "message": str(e), "status": 0}))
"#;

/// Runs `calls`, Python that defines `call(s3, args)` (returning a dict of fields to report, or
/// `None`), as `key_id`/`secret` against `endpoint` with `args`. The machine's AWS configuration
/// (files, profile, session token, instance metadata) is kept out: only the given key signs.
///
/// Returns `{"ok": true, ...}` or `{"ok": false, "code", "message", "status"}` for S3's refusals;
/// an error when Python itself fails.
pub async fn boto3(endpoint: &str, key_id: &str, secret: &str, calls: &str, args: &[&str]) -> Result<Value> {
    let program = format!("{PROLOGUE}\n{calls}\n{EPILOGUE}");
    let mut command = Command::new("python3");
    command
        // The program on stdin keeps it out of error messages, which name the command.
        .arg("-")
        .args([endpoint, key_id, secret])
        .args(args)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN");
    let output = run(command, Some(program.as_bytes())).await?.ok()?;
    serde_json::from_str(output.stdout.trim()).map_err(|e| Error::Invalid {
        what: "boto3 answer".to_owned(),
        reason: format!("{e}: {:?}", output.stdout),
    })
}
