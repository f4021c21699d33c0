//! Simulated transformers and smart meters for gridwatch's demo and tests.
