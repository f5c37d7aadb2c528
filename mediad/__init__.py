"""mediad: GPU video transcoding and media-ML service."""

__version__ = "0.1.0"
