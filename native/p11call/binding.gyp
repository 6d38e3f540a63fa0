{
  "targets": [
    {
      "target_name": "p11call",
      "sources": ["p11call.c"],
      "include_dirs": ["/usr/include/p11-kit-1"],
      "libraries": ["-ldl"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-std=c11"]
    }
  ]
}
