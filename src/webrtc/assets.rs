//! The browser SDK, its TypeScript declarations and the demo page, compiled into the binary;
//! `crate::control::browser` serves them.

/// The SDK.
pub const SDK_JS: &str = include_str!("assets/interwork.js");
/// The SDK's TypeScript declarations.
pub const SDK_DTS: &str = include_str!("assets/interwork.d.ts");
/// The demo page.
pub const DEMO_HTML: &str = include_str!("assets/demo.html");

/// The account demo sessions and participants are made in.
pub const DEMO_ACCOUNT: &str = "default";
