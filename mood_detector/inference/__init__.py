"""Slice-wise inference over volumes and folders."""
