"""Leaf helpers shared across xvit. Modules here import nothing from xvit but each other."""
