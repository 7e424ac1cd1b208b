"""The platform-free heart of acechat: conversations, presets, policy, the upstream client."""
