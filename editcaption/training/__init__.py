"""SFT and HAE-DPO training on Ray Train + DeepSpeed (issue #5)."""
