//! Demo and test backends (in progress).
