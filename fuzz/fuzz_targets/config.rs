//! `Config::from_toml` on arbitrary text.
//!
//! Besides never panicking, checks what a user relies on:
//! - a config that validates prints (`to_toml`, what `--print-config` shows as the effective
//!   config) as text that validates to the same config, and prints the same again;
//! - a config that is refused is refused with at least one problem, each with a message.

#![no_main]

use brokerside::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml(text) {
        Ok(config) => {
            let printed = config.to_toml();
            let reread = Config::from_toml(&printed).unwrap_or_else(|errors| {
                panic!("the printed config is refused:\n{errors}\n--- printed:\n{printed}")
            });
            assert_eq!(reread, config, "--- printed:\n{printed}");
            assert_eq!(reread.to_toml(), printed, "printing is not stable");
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "refused without a reason");
            for error in &errors.0 {
                assert!(
                    !error.message.is_empty() && !error.to_string().is_empty(),
                    "an error without a message: {error:?}"
                );
            }
        }
    }
});
