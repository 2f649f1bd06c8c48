//! The local control-plane harness shared by the end-to-end tests.
