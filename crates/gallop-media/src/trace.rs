//! openh264 prints its messages (a parameter warning on every encoder start) straight to stderr.
//! Its trace callback hands them to `tracing` at debug level instead, so they show only when
//! asked for (`RUST_LOG=debug`) and never interleave with a CLI's own output.

use std::ffi::{CStr, c_char, c_int, c_void};

use openh264::encoder::Encoder;
use openh264_sys2::{ENCODER_OPTION_TRACE_CALLBACK, WelsTraceCallback};

unsafe extern "C" fn to_tracing(_context: *mut c_void, level: c_int, message: *const c_char) {
    if message.is_null() {
        return;
    }
    // SAFETY: openh264 passes a NUL-terminated string that lives for the call.
    let text = unsafe { CStr::from_ptr(message) }.to_string_lossy();
    tracing::debug!(target: "openh264", level, "{}", text.trim_end());
}

/// Points the encoder's messages at `tracing`. Must run before the first frame: the encoder
/// initialises (and warns) then.
pub fn route_encoder_messages(encoder: &mut Encoder) {
    let mut callback: WelsTraceCallback = Some(to_tracing);
    // SAFETY: the option takes a pointer to a WelsTraceCallback, which openh264 copies; the
    // function it names is 'static.
    unsafe {
        encoder
            .raw_api()
            .set_option(ENCODER_OPTION_TRACE_CALLBACK, (&raw mut callback).cast());
    }
}
