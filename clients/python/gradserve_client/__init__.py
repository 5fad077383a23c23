"""Python client for the gradserve gradient-computation service."""
