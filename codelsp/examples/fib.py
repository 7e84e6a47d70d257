"""A small file to try codelsp on: complete the body of fibonacci()."""


def fibonacci(n: int) -> int:
    """Return the n-th Fibonacci number."""
    if n < 2:
        return n
    return 


if __name__ == "__main__":
    print(fibonacci(10))
