//! Support code shared by the end-to-end tests (each test binary declares `mod support;` and uses
//! what it needs, so some items are unused in any one binary).
#![allow(dead_code)]

pub mod browser;
pub mod cluster;
pub mod env;
pub mod kubelet;
