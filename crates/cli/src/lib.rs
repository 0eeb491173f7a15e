//! `asg-optimizer`, the command line: `plan` shows what the scanner would do on an account and
//! what it would save, `status` what the functions are doing now. Both are built on the
//! scanner's own reads and planning ([`asg_core::workflows::scan::survey`]) and make no change.
//! Not deployed: argument parsing, tables and SSO profiles stay out of the Lambda bootstraps.

pub mod report;
pub mod table;

use asg_core::error::AwsError;
use report::Failure;

/// The one line a failure prints: what went wrong and what to do about it.
pub fn explain(failure: &Failure, region: &str) -> String {
    let e = match failure {
        Failure::UnknownGroups(names) => {
            return format!("no Auto Scaling group named {} in {region}", names.join(", "));
        }
        Failure::Aws(e) => e,
    };
    let message = e.message.as_deref().unwrap_or_default();
    match e.code() {
        "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" | "UnauthorizedAccess" => format!(
            "access denied: {} is not allowed to these credentials; the README lists the read-only policy \
             plan and status need ({message})",
            e.operation
        ),
        "AuthFailure"
        | "InvalidClientTokenId"
        | "UnrecognizedClientException"
        | "SignatureDoesNotMatch"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "InvalidToken" => {
            format!("AWS refused the credentials ({}) calling {}: {message}", e.code(), e.operation)
        }
        "" if message.contains("credential") => format!(
            "no AWS credentials: pass --profile, set AWS_PROFILE or AWS_ACCESS_KEY_ID, or run `aws sso login` \
             ({}: {})",
            e.operation,
            first_line(message)
        ),
        "" if is_unreachable(e) => {
            format!("could not reach {} in {region}: is {region} a Region? ({})", e.operation, first_line(message))
        }
        _ => e.to_string(),
    }
}

fn is_unreachable(e: &AwsError) -> bool {
    let m = e.message.as_deref().unwrap_or_default();
    m.contains("dns error") || m.contains("failed to lookup address") || m.contains("Name or service not known")
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// Whether `region` looks like an AWS Region name (`eu-west-1`, `us-gov-west-1`, `cn-north-1`).
pub fn looks_like_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        && parts.last().is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
        && parts[1..parts.len() - 1].iter().all(|p| p.bytes().all(|b| b.is_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names_are_checked_before_any_call() {
        for ok in ["us-east-1", "eu-west-3", "us-gov-west-1", "ap-southeast-2", "cn-north-1"] {
            assert!(looks_like_region(ok), "{ok}");
        }
        for bad in ["us-east1", "useast-1", "US-EAST-1", "us-east-", "eu-west-1a", "", "east-1"] {
            assert!(!looks_like_region(bad), "{bad}");
        }
    }

    #[test]
    fn failures_name_their_cause_in_one_line() {
        let aws = |code: Option<&str>, message: &str| {
            Failure::Aws(AwsError::new(
                "ec2:DescribeInstances",
                code.map(String::from),
                Some(message.to_string()),
                false,
            ))
        };
        let cases = [
            (Failure::UnknownGroups(vec!["web".into()]), "no Auto Scaling group named web in eu-west-1"),
            (
                aws(Some("UnauthorizedOperation"), "You are not authorized"),
                "access denied: ec2:DescribeInstances is not allowed",
            ),
            (aws(Some("AuthFailure"), "bad key"), "AWS refused the credentials (AuthFailure)"),
            (aws(None, "dispatch failure: no credentials provider\nmore"), "no AWS credentials: pass --profile"),
            (aws(None, "io error: dns error: failed to lookup address"), "could not reach ec2:DescribeInstances in"),
            (aws(Some("Throttling"), "slow down"), "ec2:DescribeInstances failed: Throttling"),
        ];
        for (failure, start) in cases {
            let line = explain(&failure, "eu-west-1");
            assert!(line.starts_with(start) && !line.contains('\n'), "{line}");
        }
    }
}
