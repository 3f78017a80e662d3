//! `mqtt::connect::parse` on arbitrary bytes, as the CONNECT preread sees a client's first bytes.
//!
//! Besides never panicking, checks what `read_connect` (which reads no more than the parser says
//! is missing, and forwards exactly the bytes of a complete CONNECT) relies on:
//! - a complete CONNECT's length is within the input and within the size limit;
//! - the CONNECT alone (`input[..len]`) parses to the same answer, so the client's next packets
//!   never change what its CONNECT says;
//! - every proper prefix of a complete CONNECT asks for more, and for no more than the rest of
//!   it, so how the packet is split across TCP segments never decides anything and a read never
//!   takes a byte past the CONNECT;
//! - an error on a prefix is the same error on the whole input (a refusal is final);
//! - a smaller size limit only refuses (with the declared size), never parses differently;
//! - error messages are one non-empty line (they go into the log).

#![no_main]

use brokerside::mqtt::DEFAULT_MAX_CONNECT_SIZE;
use brokerside::mqtt::connect::{ConnectError, Parse, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let result = parse(data, DEFAULT_MAX_CONNECT_SIZE);
    match result {
        Ok(Parse::Complete { connect, len }) => {
            assert!(
                len >= 2 && len <= data.len(),
                "length {len} of {} given",
                data.len()
            );
            assert!(
                len <= DEFAULT_MAX_CONNECT_SIZE,
                "length {len} over the limit"
            );
            let packet = &data[..len];
            assert_eq!(
                parse(packet, DEFAULT_MAX_CONNECT_SIZE),
                result,
                "the CONNECT alone differs"
            );
            for cut in 0..len {
                match parse(&packet[..cut], DEFAULT_MAX_CONNECT_SIZE) {
                    Ok(Parse::Incomplete { needed }) => assert!(
                        needed >= 1 && cut + needed <= len,
                        "{cut} of {len} bytes ask for {needed} more"
                    ),
                    other => panic!("{cut} of {len} bytes of {connect:?}: {other:?}"),
                }
            }
            smaller_limits(packet, len);
        }
        Ok(Parse::Incomplete { needed }) => {
            assert!(needed >= 1, "asks for no more bytes");
            // Before the fixed header is in, `needed` is a lower bound, at most its first two
            // bytes; after it, exact, and the packet fits the limit.
            assert!(
                data.len() + needed <= DEFAULT_MAX_CONNECT_SIZE.max(2),
                "{} bytes ask for {needed} more",
                data.len()
            );
        }
        Err(error) => {
            check_message(&error);
            // The refusal was already decided at some prefix, and stays the same.
            let half = &data[..data.len() / 2];
            if let Err(early) = parse(half, DEFAULT_MAX_CONNECT_SIZE) {
                assert_eq!(early, error, "{} bytes refused otherwise", half.len());
            }
        }
    }
});

/// A limit below a complete CONNECT's length refuses it as too large; at or above, the same.
fn smaller_limits(packet: &[u8], len: usize) {
    let whole = parse(packet, DEFAULT_MAX_CONNECT_SIZE);
    assert_eq!(parse(packet, len), whole, "at a limit of exactly {len}");
    for max in [0, 1, len / 2, len - 1] {
        match parse(packet, max) {
            Err(ConnectError::TooLarge { size, max: said }) => {
                assert_eq!((size, said), (len, max), "limit {max}")
            }
            other => panic!("{len} bytes under a limit of {max}: {other:?}"),
        }
    }
}

fn check_message(error: &ConnectError) {
    let message = error.to_string();
    assert!(
        !message.is_empty() && !message.contains('\n'),
        "{message:?}"
    );
}
