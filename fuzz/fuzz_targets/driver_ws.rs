//! `lastmile_server::fuzzing::driver_message` on any bytes: it must return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lastmile_server::fuzzing::driver_message(data);
});
