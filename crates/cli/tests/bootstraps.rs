//! The functions do not pay for the command line: `sam build` runs `cargo lambda build --bin
//! <function>` at the workspace root, which resolves features over the default members. This
//! crate is not one of them, and no default member may depend on it; otherwise its SSO support
//! and argument parsing would be unified into every bootstrap.

use std::process::Command;

fn cargo_tree(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--quiet", "--target", "aarch64-unknown-linux-gnu"])
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .expect("cargo tree");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn the_bootstraps_build_without_the_command_lines_dependencies() {
    let (ok, tree) = cargo_tree(&["-e", "features", "--prefix", "none", "-i", "aws-config"]);
    assert!(ok, "{tree}");
    for feature in ["\"sso\"", "\"credentials-process\""] {
        assert!(!tree.contains(feature), "aws-config feature {feature} reaches the default members:\n{tree}");
    }
    for package in ["clap", "comfy-table", "asg-optimizer"] {
        let (found, tree) = cargo_tree(&["-i", package]);
        assert!(!found, "{package} is in the build of the default members:\n{tree}");
    }
    // The check can see them: the whole workspace has both.
    let (ok, tree) = cargo_tree(&["--workspace", "-e", "features", "--prefix", "none", "-i", "aws-config"]);
    assert!(ok && tree.contains("\"sso\""), "{tree}");
}
