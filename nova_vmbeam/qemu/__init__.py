"""QEMU processes, their monitors and their command lines."""
