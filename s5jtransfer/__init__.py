"""s5jtransfer: ledgered, verified S3 -> local volumes -> S3 transfers driven by s5cmd."""

__version__ = "12.0.0"
