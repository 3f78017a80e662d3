//! `brokerside check-config` on every fixture and every shipped config, as a user runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use brokerside::config::{Config, DEFAULT_CONFIG};

fn check_config(file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_brokerside"))
        .arg("check-config")
        .arg(file)
        .output()
        .expect("the brokerside binary runs")
}

fn toml_files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .toml files in {}", dir.display());
    files
}

#[test]
fn every_valid_fixture_and_shipped_config_passes() {
    let mut files = toml_files("tests/fixtures/config/valid");
    files.extend(toml_files("config"));
    for file in files {
        let output = check_config(&file);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{}: {stderr}", file.display());
        // What check-config prints is the effective config: it must itself be a valid config
        // equal to the file's.
        let printed = String::from_utf8(output.stdout).expect("UTF-8 output");
        let from_file = Config::from_file(&file).expect("valid");
        assert_eq!(
            Config::from_toml(&printed).expect("printed config parses"),
            from_file,
            "{}",
            file.display()
        );
    }
}

#[test]
fn every_invalid_fixture_fails_with_the_messages_it_states() {
    for file in toml_files("tests/fixtures/config/invalid") {
        let text = std::fs::read_to_string(&file).expect("readable fixture");
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expected.is_empty(),
            "{} states no `# expect:` line",
            file.display()
        );
        let output = check_config(&file);
        assert_eq!(output.status.code(), Some(2), "{}", file.display());
        assert!(
            output.stdout.is_empty(),
            "{}: printed a config",
            file.display()
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        let got: Vec<&str> = stderr.lines().collect();
        if expected.len() == 1 && expected[0].starts_with("TOML syntax error") {
            assert_eq!(got.len(), 1, "{}: {stderr}", file.display());
            assert!(
                got[0].starts_with(expected[0]),
                "{}: {stderr}",
                file.display()
            );
        } else {
            assert_eq!(got, expected, "{}", file.display());
        }
    }
}

#[test]
fn the_embedded_default_is_config_brokerside_toml() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/brokerside.toml");
    assert_eq!(
        DEFAULT_CONFIG,
        std::fs::read_to_string(&path).expect("config/brokerside.toml")
    );
    let output = check_config(&path);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        Config::embedded_default().expect("valid").to_toml()
    );
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let output = check_config(Path::new("/nonexistent/brokerside.toml"));
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("cannot read /nonexistent/brokerside.toml:"),
        "{stderr}"
    );
}
