"""tokenops: token metering and FinOps for applications that call many LLM providers."""
