//! `asg-optimizer plan` and `asg-optimizer status`: see the crate's documentation and the README.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use asg_core::aws::{ApiCalls, AwsCloud};
use asg_core::config::{Config, Function};
use asg_core::workflows::scan::Scope;
use asg_optimizer::report;
use asg_optimizer::{explain, looks_like_region, table};
use aws_config::Region;
use clap::{Args, Parser, Subcommand};

/// What asg-optimizer would do on your account, and what it is doing now. Read-only: it makes
/// no change. AWS credentials and Region come from the standard chain (--profile, --region,
/// AWS_PROFILE, AWS_REGION, SSO profiles); the other knobs take the template's environment
/// variable names and defaults.
#[derive(Parser, Debug)]
#[command(name = "asg-optimizer", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
struct Common {
    /// AWS profile (also AWS_PROFILE).
    #[arg(long, global = true)]
    profile: Option<String>,
    /// AWS Region (also AWS_REGION, or the profile's).
    #[arg(long, global = true)]
    region: Option<String>,
    /// The tag that opts a group in (OptInTagKey / OptInTagValue).
    #[arg(long, global = true, value_name = "KEY=VALUE", env = "OPT_IN_TAG", value_parser = opt_in_tag)]
    opt_in_tag: Option<(String, String)>,
    /// Fixed prices instead of the Spot price history and the Price List:
    /// `type=on_demand:spot,...` in USD per hour (PriceTable).
    #[arg(long, global = true, env = "PRICE_TABLE")]
    price_table: Option<String>,
    /// Print JSON (the README documents its shape) instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// What the next scan would start in each group, what it would leave alone and why, and what
    /// it would cost per hour: now, after that scan, and with every replaceable instance on Spot.
    Plan {
        /// Plan this group, opted in or not (repeatable).
        #[arg(long = "group", value_name = "NAME")]
        groups: Vec<String>,
        /// Plan every group of the account, those not opted in as if they were.
        #[arg(long, conflicts_with = "groups")]
        all_groups: bool,
    },
    /// What is under way: swaps in flight and their stage, instances set aside, backed-off Spot
    /// pools, paused rollouts, raised MaxSize values, and what the next scan will clean up.
    Status,
}

fn opt_in_tag(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => Ok((k.trim().into(), v.trim().into())),
        _ => Err(format!("{raw:?} is not KEY=VALUE")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&format!("could not start: {e}")),
    };
    runtime.block_on(run(cli))
}

fn fail(line: &str) -> ExitCode {
    eprintln!("asg-optimizer: error: {line}");
    ExitCode::FAILURE
}

async fn run(cli: Cli) -> ExitCode {
    let common = &cli.common;
    let overrides = |name: &str| match name {
        "OPT_IN_TAG_KEY" => common.opt_in_tag.as_ref().map(|t| t.0.clone()),
        "OPT_IN_TAG_VALUE" => common.opt_in_tag.as_ref().map(|t| t.1.clone()),
        "PRICE_TABLE" => common.price_table.clone(),
        _ => None,
    };
    let config = match Config::from_lookup(Function::Cli, |name| overrides(name).or_else(|| std::env::var(name).ok())) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    let mut loader = AwsCloud::loader();
    if let Some(p) = &common.profile {
        loader = loader.profile_name(p);
    }
    if let Some(r) = &common.region {
        loader = loader.region(Region::new(r.clone()));
    }
    let sdk = loader.load().await;
    let Some(region) = sdk.region().map(|r| r.to_string()) else {
        return fail("no AWS Region: pass --region, set AWS_REGION, or give the profile a region");
    };
    if !looks_like_region(&region) {
        return fail(&format!("{region:?} is not an AWS Region name (like eu-west-1)"));
    }
    let calls = ApiCalls::default();
    let cloud = AwsCloud::new(&sdk, calls.clone());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());

    let progress = progress(calls.clone());
    let output = match &cli.command {
        Command::Plan { groups, all_groups } => {
            let scope = if *all_groups {
                Scope::All
            } else if groups.is_empty() {
                Scope::OptedIn
            } else {
                Scope::Named(groups.clone())
            };
            report::plan(&cloud, &config, now, &scope).await.map(|r| {
                if common.json {
                    serde_json::to_string_pretty(&r).unwrap_or_default()
                } else {
                    table::plan(&r, color)
                }
            })
        }
        Command::Status => report::status(&cloud, &config, now).await.map(|r| {
            if common.json {
                serde_json::to_string_pretty(&r).unwrap_or_default()
            } else {
                table::status(&r, color)
            }
        }),
    };
    if let Some(p) = progress {
        p.abort();
        eprint!("\r\x1b[K");
    }
    match output {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(failure) => fail(&explain(&failure, &region)),
    }
}

/// A line on stderr counting the calls while a large account is read (only on a terminal).
fn progress(calls: ApiCalls) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    Some(tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let n: u64 = calls.snapshot().values().sum();
            eprint!("\r\x1b[Kreading the account: {n} calls");
        }
    }))
}
