{
  "targets": [
    {
      "target_name": "unixdgram",
      "sources": ["unixdgram.c"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-std=c11"]
    }
  ]
}
